#!/usr/bin/env bash
# Compiles every cargo-fuzz target in fuzz/, then runs each once over its
# committed seed corpus (`-runs=0`: every input once, no mutation), so CI
# notices when a target stops building or when a code change breaks an
# invariant a target asserts on inputs it already has. Works on the stable
# toolchain: `-s none` builds with libFuzzer's coverage instrumentation but
# no sanitizer, which is the one mode that needs no nightly-only flag.
# Extra arguments go to `cargo fuzz build` (e.g. a single target name).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz build -s none "$@"
for target in $(cargo fuzz list); do
    echo "replaying corpus/$target"
    cargo fuzz run -s none "$target" "corpus/$target" -- -runs=0 -timeout=10 -rss_limit_mb=2048 2>&1 | tail -n 2
done
