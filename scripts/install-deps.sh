#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when missing.
#   scripts/install-deps.sh            build + run deps
#   scripts/install-deps.sh --test     also the independent checkers used by tests
set -euo pipefail
pkgs=(pkg-config clang libclang-dev libavformat-dev libavcodec-dev libavutil-dev
      libswresample-dev libpq-dev libmariadb-dev ffmpeg)
if [ "${1:-}" = "--test" ]; then
  # curl and openssl: hlsd's TLS test checks HTTP/2 with curl against an openssl-made cert.
  # python3-venv: moto's S3 server for the object-storage tests (scripts/install-moto.sh).
  pkgs+=(chromium chromium-driver tstools curl openssl python3-venv)
fi
# hlsd embeds hls.js from npm; Node.js is needed to install it.
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
