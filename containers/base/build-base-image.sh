#!/usr/bin/env bash
# Build the testbed's base image (Debian 12 "bookworm", minbase) locally with debootstrap,
# so no container registry is needed. Set HPCHUB_BASE_IMAGE=debian:bookworm (or any image)
# together with HPCHUB_PULL_BASE=1 to pull a base image instead.
set -euo pipefail

image="${HPCHUB_BASE_IMAGE:-hpchub/base:bookworm}"
mirror="${HPCHUB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "==> base image $image already present"
    exit 0
fi

if [ "${HPCHUB_PULL_BASE:-0}" = "1" ]; then
    echo "==> pulling base image $image (HPCHUB_PULL_BASE=1)"
    docker pull "$image"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "ERROR: debootstrap is needed to build $image without a registry." >&2
    echo "       Install it (Debian/Ubuntu: apt-get install debootstrap), or set" >&2
    echo "       HPCHUB_BASE_IMAGE=debian:bookworm HPCHUB_PULL_BASE=1 to pull one." >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "ERROR: debootstrap needs root to build $image (run as root, or pull one with HPCHUB_PULL_BASE=1)." >&2
    exit 1
fi

rootfs="$(mktemp -d /tmp/hpchub-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "==> debootstrap bookworm (minbase) from $mirror into $rootfs"
start=$(date +%s)
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    echo "ERROR: debootstrap failed (full log: $rootfs.log)" >&2
    exit 1
}
rm -f "$rootfs.log"
# Keep the image small: no package lists or caches.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
echo "==> importing $rootfs as $image"
tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
echo "==> base image $image built in $(( $(date +%s) - start )) s"
