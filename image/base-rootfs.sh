#!/usr/bin/env bash
# Builds the Debian base of the root file system (minbase + packages.list + kernel and
# initrd) as a tarball, cached by the hash of its inputs: OUT/rootfs-base-HASH.tar.
# Usage: image/base-rootfs.sh CACHE_DIR  -> prints the tarball path on the last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="$1"
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

mapfile -t pkgs < <(grep -v '^#' "$here/packages.list" | grep -v '^$')
hash=$(cat "$here/packages.list" "$here/base-rootfs.sh" "$here/initramfs/"* | sha256sum | cut -c1-16)
out="$cache/rootfs-base-$hash.tar"
if [ -s "$out" ]; then
  echo "base root file system: cached $out" >&2
  echo "$out"
  exit 0
fi
mkdir -p "$cache/apt"
rm -f "$cache"/rootfs-base-*.tar
include=$(IFS=,; echo "${pkgs[*]}")
# The apt cache is carried in and out so rebuilds do not download again. ("$1" in the
# hooks is the chroot, expanded by mmdebstrap.)
# shellcheck disable=SC2016
mmdebstrap --variant=minbase --format=tar --include="$include" --components=main \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --skip=download/empty --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in '$cache/apt' /var/cache/apt/archives/" \
  --essential-hook='mkdir -p "$1"/etc/initramfs-tools/conf.d "$1"/etc/initramfs-tools/hooks' \
  --essential-hook="upload '$here/initramfs/watchgrid.conf' /etc/initramfs-tools/conf.d/watchgrid.conf" \
  --essential-hook="upload '$here/initramfs/watchgrid-hook' /etc/initramfs-tools/hooks/watchgrid" \
  --essential-hook='chmod 0755 "$1"/etc/initramfs-tools/hooks/watchgrid' \
  --essential-hook='mkdir -p "$1"/etc/initramfs-tools/scripts/local-top' \
  --essential-hook="upload '$here/initramfs/watchgrid-verity' /etc/initramfs-tools/scripts/local-top/watchgrid-verity" \
  --essential-hook='chmod 0755 "$1"/etc/initramfs-tools/scripts/local-top/watchgrid-verity' \
  --customize-hook="sync-out /var/cache/apt/archives '$cache/apt'" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
  "$suite" "$out.tmp" \
  "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main" >&2
mv "$out.tmp" "$out"
echo "$out"
