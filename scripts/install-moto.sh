#!/usr/bin/env bash
# Installs moto's S3-compatible server (PyPI `moto[server]`, pinned) into a virtualenv for the
# object-storage tests, unless it is already there, and prints the path of its `moto_server`.
# The tests find it through FLEET_MOTO_SERVER (scripts/test.sh sets it from this script).
#   MOTO_VENV=~/.cache/fleet/moto-5.2.6 (default)
set -euo pipefail
version=5.2.6
venv=${MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fleet/moto-$version}
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version" >&2
fi
echo "$venv/bin/moto_server"
