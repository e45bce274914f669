#!/usr/bin/env bash
# Installs hlsd's web dependencies (hls.js, embedded in the binary; the
# browser-test driver) from the committed lock file, unless they are current.
# Skipping an unneeded `npm ci` keeps hlsd's build script from rerunning.
set -euo pipefail
cd "$(dirname "$0")/../hlsd/web"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
