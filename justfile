# Recipes a contributor looks for; each is one command you could type
# yourself (CI does not need just: .ci/run calls the same scripts).

# The test suite (tests/: real processes; some need root)
test:
    cargo test

# All of CI: build, tests, examples, lint, format, loom, docs, units, package
ci:
    .ci/run

# Criterion benchmarks (take figures on an idle machine)
bench:
    cargo bench

# One fuzz target for a while (needs nightly and cargo-fuzz; see README)
fuzz target="control_frame" seconds="60":
    cd fuzz && cargo +nightly fuzz run {{target}} -- -max_total_time={{seconds}} -max_len=70000 -timeout=10

# The Debian package: target/debian/daemoneye_<version>_<arch>.deb
deb:
    dist/build-deb.sh
