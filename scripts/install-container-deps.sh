#!/bin/sh
# What tests/test_image.py (and `make image` with podman) need to build and run the
# sidecar's image where no registry is reachable: podman, the runc runtime (crun,
# podman's default when installed, fails on hosts in cgroup hybrid mode; the tests
# pass --runtime runc), and debootstrap for the Debian base rootfs
# (scripts/build-base-image.sh). Installed only when missing.
set -eu
. "$(dirname "$0")/lib.sh"

missing=""
command -v podman >/dev/null 2>&1 || missing="$missing podman"
command -v runc >/dev/null 2>&1 || missing="$missing runc"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"

if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # word splitting of the package list is wanted
    apt_install $missing
fi
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool still missing" >&2; exit 1; }
done
