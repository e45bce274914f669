#!/usr/bin/env bash
# The test command: installs what the tests need, starts the catalog test
# databases if they are down, then runs format, lint and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/start-test-databases.sh
scripts/npm-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
