#!/usr/bin/env bash
# The test command: installs what the tests need, starts the catalog test
# databases if they are down, then checks formatting, lints and runs the whole
# test suite.
#
# Lints and tests share one compilation: cargo runs clippy-driver as the
# compiler of the workspace's own crates (RUSTC_WORKSPACE_WRAPPER, which is
# how `cargo clippy` works too), so building every target for the tests also
# applies clippy's lints with -D warnings, the same as
# `cargo clippy --workspace --all-targets -- -D warnings`, instead of a second
# pass over every dependency in check mode.
#
# Optional third-party captures (docs/captures.md): tests that need one skip
# it with one line when it is absent; the lines are listed again at the end.
# FLEET_REQUIRE_CAPTURES=1 (set by .ci/run) makes an absent capture fail.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/start-test-databases.sh
scripts/npm-deps.sh
# The S3-compatible server the object-storage tests start (moto, from PyPI).
FLEET_MOTO_SERVER=$(scripts/install-moto.sh)
export FLEET_MOTO_SERVER
cargo fmt --all -- --check

if ! clippy_driver=$(rustup which clippy-driver 2>/dev/null); then
  rustup component add clippy
  clippy_driver=$(rustup which clippy-driver)
fi
export RUSTC_WORKSPACE_WRAPPER="$clippy_driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

skipped=target/tmp/skipped-captures.txt
rm -f "$skipped"
cargo test --workspace --all-targets --no-run
cargo test --workspace
if [ -s "$skipped" ]; then
  echo
  echo "Optional capture tests skipped ($(wc -l < "$skipped")); set FLEET_CAPTURES_DIR to run them (docs/captures.md):"
  sed 's/^/  /' "$skipped"
fi
