//! Makes the man pages and shell completions of `procmond` and
//! `daemoneye-agent` from their clap definitions (`daemoneye_lib::cli`), for
//! the Debian package (`dist/build-deb.sh`):
//!
//! ```sh
//! cargo run --example gen_dist -- OUT
//! ```
//!
//! writes `OUT/man/procmond.8`, `OUT/man/daemoneye-agent.1` and a page per
//! agent command (`daemoneye-agent-enumerate.1`, ...), and
//! `OUT/completions/{bash,zsh,fish}/` with each shell's file for both
//! binaries (`procmond.bash`, `_procmond`, `procmond.fish`, ...).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

use daemoneye_lib::cli::{agent, procmond};

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: gen_dist OUT_DIR");
    };
    let out = PathBuf::from(out);
    let man = out.join("man");
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;

    // procmond is a daemon: section 8. The agent is a command: section 1,
    // with a page per subcommand (daemoneye-agent-enumerate(1), ...).
    let page = man.join("procmond.8");
    let mut text = Vec::new();
    Man::new(procmond::Args::command())
        .section("8")
        .render(&mut text)
        .context("rendering procmond.8")?;
    fs::write(&page, text).with_context(|| format!("writing {}", page.display()))?;
    clap_mangen::generate_to(agent::Args::command(), &man)
        .context("rendering daemoneye-agent's pages")?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let dir = out.join("completions").join(shell.to_string());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        complete(shell, procmond::Args::command(), "procmond", &dir)?;
        complete(shell, agent::Args::command(), "daemoneye-agent", &dir)?;
    }
    println!("man pages and completions in {}", out.display());
    Ok(())
}

fn complete(shell: Shell, mut command: clap::Command, name: &str, dir: &Path) -> Result<()> {
    clap_complete::generate_to(shell, &mut command, name, dir)
        .with_context(|| format!("{shell} completions of {name}"))?;
    Ok(())
}
