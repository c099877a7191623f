#!/usr/bin/env bash
# Builds a Debian base image from Debian's own packages, for machines that cannot pull images
# (no registry access) but reach a Debian mirror: debootstrap, then `docker import`.
#
#   images/base/build.sh [--tag codedpo-base:bookworm] [--mirror URL] [--suite bookworm]
#
# The image has what the Dockerfiles expect of python:3.11-slim-bookworm: python3 (3.11 from
# bookworm) with venv, ca-certificates and apt; `images/build.sh --base debootstrap` uses it as
# every Dockerfile's BASE_IMAGE. Needs root (debootstrap) and a Docker engine.
set -euo pipefail

tag="codedpo-base:bookworm"
mirror="http://deb.debian.org/debian"
suite="bookworm"
die() { echo "images/base/build.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag="$2"; shift 2 ;;
    --mirror) [ $# -ge 2 ] || die "--mirror needs a value"; mirror="$2"; shift 2 ;;
    --suite) [ $# -ge 2 ] || die "--suite needs a value"; suite="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
command -v docker >/dev/null 2>&1 || die "docker is not installed"
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/codedpo-rootfs-XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
echo "+ debootstrap --variant=minbase $suite $rootfs $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; die "debootstrap failed"; }
rm -f "$rootfs.log"
# As in Docker's official Debian images: no package lists, no caches.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
ln -sf python3 "$rootfs/usr/bin/python"
# mktemp made the folder 0700, and tar records "." with its mode: the image's / would be closed
# to every user but root (the candidates' uids could not even chdir).
chmod 0755 "$rootfs"
echo "+ docker import $tag"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
echo "built $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
