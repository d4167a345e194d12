#!/usr/bin/env bash
# Checks that the bytes this crate produces for every seed message decode
# field for field with Google's protoc, using the seed's schema.
#
# protoc is not installed on the machine (the build never needs it): this
# script puts grpcio-tools, which bundles Google's protoc as the Python module
# grpc_tools.protoc, in a venv under target/ and uses it only here.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCIO_TOOLS_VERSION=1.85.1
VENV=target/protoc-venv
OUT=target/protoc-fixtures

run() { echo "+ $*"; "$@"; }

if ! "$VENV/bin/python" -c 'import grpc_tools.protoc' 2>/dev/null; then
    run python3 -m venv "$VENV"
    run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi
run "$VENV/bin/python" -m grpc_tools.protoc --version

rm -rf "$OUT"
run cargo run --quiet --example protoc_fixtures -- "$OUT"
run "$VENV/bin/python" .ci/protoc_compat.py "$OUT"
