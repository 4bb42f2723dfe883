#!/bin/sh
# Create the project's virtualenv with the given Python (3.11+). Debian's python3
# ships without the venv module (package python3-venv): install it when missing.
set -eu
. "$(dirname "$0")/lib.sh"
PY="$1"
VENV="$2"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "error: $PY not found; tickscope needs Python 3.11 or newer" >&2
    exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "error: tickscope needs Python 3.11 or newer; $PY is $("$PY" -V 2>&1)" >&2
    exit 1
fi
if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    echo ">> $PY -m venv failed: installing Debian's python3-venv" >&2
    apt_install python3-venv
    "$PY" -m venv "$VENV"
fi
