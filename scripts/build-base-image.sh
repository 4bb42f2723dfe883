#!/bin/sh
# A Debian bookworm base image with Python 3.11 for building and running the
# sidecar's image where no image registry is reachable (tests/test_image.py):
# `debootstrap --variant=minbase` from the Debian mirror apt uses on this machine,
# then `podman import`. The result stands in for python:3.11-slim-bookworm:
#   podman build --build-arg BASE=localhost/tickscope-base:bookworm .
#
# Cached: the rootfs tarball and a stamp live in .cache/base-image/ (gitignored);
# a second run only re-imports when podman lost the image, and does nothing when
# the image is there with the stamp's ID. FORCE=1 rebuilds.
#
# Usage: scripts/build-base-image.sh [IMAGE]   (default localhost/tickscope-base:bookworm)
# Env: MIRROR (default: the Debian archive URI of apt's sources),
#      CACHE_DIR (default .cache/base-image), FORCE=1.
set -eu
. "$(dirname "$0")/lib.sh"

root="$(cd "$(dirname "$0")/.." && pwd)"
image="${1:-localhost/tickscope-base:bookworm}"
suite=bookworm
# python3-venv brings ensurepip (Debian's python3 has no venv module without it);
# the Dockerfile's build stage makes its venv with `python3 -m venv`.
packages="python3,python3-venv,ca-certificates"
cache="${CACHE_DIR:-$root/.cache/base-image}"
tarball="$cache/rootfs-$suite.tar"
stamp="$cache/rootfs-$suite.stamp"
# What the cached rootfs was made from: a change of any of these rebuilds it.
recipe="suite=$suite packages=$packages variant=minbase"

for tool in podman debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "error: $tool not installed (scripts/install-container-deps.sh installs it)" >&2
        exit 1
    }
done

mirror_from_apt() {
    # deb822 sources (URIs: ...) and one-line sources (deb URI suite ...): the first
    # URI of the Debian archive itself (a path ending in /debian: not debian-security,
    # not a third-party repository).
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '
            /^[[:space:]]*#/ { next }
            /^URIs:/ { for (i = 2; i <= NF; i++) print $i; next }
            /^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }
        ' "$f"
    done | grep -E '^[a-z]+://[^[:space:]]*/debian/?$' | head -n 1
}

if [ "${FORCE:-0}" = 1 ]; then
    rm -f "$stamp" "$tarball"
fi

if [ ! -f "$tarball" ] || [ "$(sed -n 1p "$stamp" 2>/dev/null)" != "$recipe" ]; then
    mirror="${MIRROR:-$(mirror_from_apt)}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    mkdir -p "$cache"
    rootfs="$cache/rootfs-$suite"
    as_root rm -rf "$rootfs"
    echo ">> debootstrap --variant=minbase --include=$packages $suite ($mirror)" >&2
    as_root debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
        >"$cache/debootstrap.log" 2>&1 || {
        tail -n 20 "$cache/debootstrap.log" >&2
        echo "error: debootstrap failed; the whole log is $cache/debootstrap.log" >&2
        exit 1
    }
    # An image has no use for the package lists, apt's cache or the logs of the install.
    as_root rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/cache/apt/"*.bin \
        "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/log/"*.log "$rootfs/debootstrap"
    as_root tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    as_root rm -rf "$rootfs"
    mv "$tarball.tmp" "$tarball"
    printf '%s\n' "$recipe" >"$stamp"
fi

# The image: imported again only when podman does not have the one the stamp names.
wanted="$(sed -n 2p "$stamp")"
have="$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
if [ -z "$wanted" ] || [ "$have" != "$wanted" ]; then
    echo ">> podman import $tarball $image" >&2
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$tarball" "$image" >/dev/null
    id="$(podman image inspect --format '{{.Id}}' "$image")"
    printf '%s\n%s\n' "$recipe" "$id" >"$stamp"
fi
echo "$image"
