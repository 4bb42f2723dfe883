#!/bin/sh
# The Debian packages the test suite runs for real: Prometheus (and promtool),
# Alertmanager (and amtool) and node_exporter. Installed only when missing.
# On a host that runs systemd, Debian starts their services after installing;
# the tests never use those, they start their own on free loopback ports.
set -eu
. "$(dirname "$0")/lib.sh"

missing=""
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
command -v prometheus-node-exporter >/dev/null 2>&1 || missing="$missing prometheus-node-exporter"
# tickscope top's terminal tests drive it in tmux.
command -v tmux >/dev/null 2>&1 || missing="$missing tmux"

if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # word splitting of the package list is wanted
    apt_install $missing
fi
for tool in promtool prometheus prometheus-alertmanager amtool prometheus-node-exporter tmux; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool still missing" >&2; exit 1; }
done
