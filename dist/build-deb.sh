#!/usr/bin/env bash
# Builds the Debian package: both binaries, the systemd units, man pages and
# bash/zsh/fish completions (generated from the clap definitions by
# examples/gen_dist.rs), and the maintainer scripts (dist/debian/) that make
# the daemoneye user and group and enable procmond.socket.
#
#   dist/build-deb.sh            # release build: target/debian/daemoneye_<version>_<arch>.deb
#   DEB_PROFILE=dev dist/build-deb.sh   # the debug build (what CI checks: layout, not speed)
#
# A tree staged here and `dpkg-deb --build`: dpkg-deb is on every Debian
# machine, so neither cargo-deb nor just is needed (`just deb` calls this).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${DEB_PROFILE:-release}
case "$profile" in
    release) bin_dir=target/release ;;
    dev) bin_dir=target/debug ;;
    *) echo "error: DEB_PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
esac

run() { echo "+ $*"; "$@"; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
stage=target/debian/stage
generated=target/debian/generated
deb=target/debian/daemoneye_${version}_${arch}.deb

run cargo build --profile "$profile" --bins
rm -rf "$stage" "$generated"
run cargo run --quiet --example gen_dist -- "$generated"

install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
    "$stage/usr/share/man/man1" "$stage/usr/share/man/man8" \
    "$stage/usr/share/bash-completion/completions" \
    "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d" \
    "$stage/usr/share/doc/daemoneye"
for bin in procmond daemoneye-agent; do
    install -m 0755 "$bin_dir/$bin" "$stage/usr/bin/$bin"
    install -m 0644 "$generated/completions/bash/$bin.bash" \
        "$stage/usr/share/bash-completion/completions/$bin"
    install -m 0644 "$generated/completions/zsh/_$bin" "$stage/usr/share/zsh/vendor-completions/_$bin"
    install -m 0644 "$generated/completions/fish/$bin.fish" \
        "$stage/usr/share/fish/vendor_completions.d/$bin.fish"
done
if [ "$profile" = release ]; then
    strip --strip-unneeded "$stage/usr/bin/procmond" "$stage/usr/bin/daemoneye-agent"
fi
install -m 0644 dist/systemd/procmond.service dist/systemd/procmond.socket "$stage/lib/systemd/system/"
for page in "$generated"/man/*.1 "$generated"/man/*.8; do
    section=${page##*.}
    gzip -9n <"$page" >"$stage/usr/share/man/man$section/$(basename "$page").gz"
    chmod 0644 "$stage/usr/share/man/man$section/$(basename "$page").gz"
done
install -m 0644 README.md "$stage/usr/share/doc/daemoneye/README.md"
printf 'DaemonEye IPC (procmond, daemoneye-agent)\nLicense: Apache-2.0\n' \
    >"$stage/usr/share/doc/daemoneye/copyright"

for script in postinst prerm postrm; do
    install -m 0755 "dist/debian/$script" "$stage/DEBIAN/$script"
done
installed_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_KIB@/$installed_kib/" \
    dist/debian/control >"$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

# The debug build's 100 MiB would take xz a minute: gzip, fast, there.
compress=()
if [ "$profile" = dev ]; then
    compress=(-Zgzip -z1)
fi
run dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "$deb"
echo "$deb"
