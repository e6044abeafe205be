#!/usr/bin/env bash
# Creates the project's virtualenv (`make`'s .venv, or the folder given) with python3 when
# it is missing, so `make` installs into it and never into the system's Python. Debian's
# own python3 creates virtualenvs only with python3-venv: installed here when missing and
# root (as deploy/prereqs.sh does), otherwise named. Idempotent.
set -euo pipefail

venv=${1:-.venv}
python=${PYTHON3:-python3}

if [ -x "$venv/bin/python" ]; then
  exit 0
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "runstream: needs Python >= 3.11 ($python is $("$python" -V 2>&1 || echo missing))" >&2
  exit 1
fi
if "$python" -m venv "$venv" >/dev/null 2>&1; then
  exit 0
fi
rm -rf "$venv"  # what a failed attempt left (no pip in it)
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "runstream: $python cannot create a virtualenv; install its venv module:" \
    "sudo apt-get install -y python3-venv" >&2
  exit 1
fi
echo "runstream: installing python3-venv with apt-get…" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends python3-venv >/dev/null
"$python" -m venv "$venv"
