#!/usr/bin/env bash
# Compiles every cargo-fuzz target in fuzz/ (without running them), so CI
# notices when a target stops building. Works on the stable toolchain:
# `-s none` builds with libFuzzer's coverage instrumentation but no
# sanitizer, which is the one mode that needs no nightly-only flag.
# Extra arguments go to `cargo fuzz build` (e.g. a single target name).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz build -s none "$@"
cargo fuzz list
