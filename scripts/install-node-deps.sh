#!/bin/sh
# What the dashboards' schema check needs (scripts/check_dashboard_schema.py):
# node and npm (Debian's nodejs and npm, installed only when missing), and the
# npm packages pinned in dashboards/schema/package-lock.json (@grafana/schema
# and typescript), installed with `npm ci` into dashboards/schema/node_modules
# only when it is missing or older than the lock file.
set -eu
. "$(dirname "$0")/lib.sh"

dir="$(cd "$(dirname "$0")/../dashboards/schema" && pwd)"
stamp="$dir/node_modules/.installed"

missing=""
command -v node >/dev/null 2>&1 || command -v nodejs >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # word splitting of the package list is wanted
    apt_install $missing
fi
for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool still missing" >&2; exit 1; }
done

if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ] || [ "$dir/package.json" -nt "$stamp" ]; then
    echo ">> npm ci in dashboards/schema" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --prefer-offline --ignore-scripts --loglevel=error >/dev/null)
    touch "$stamp"
fi
