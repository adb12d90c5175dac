#!/usr/bin/env bash
# Runs buildroot-config's post-image script on the Debian build's pieces (the kernel as
# bzImage, the squashfs root, systemd-boot and its stub, host tools standing in for
# Buildroot's) and checks that genimage writes the same partition table as mkdisk.sh.
# Usage: image/check-buildroot-layout.sh WORK_DIR IMAGE.img
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work=$(cd "$1" && pwd)
img=$(realpath "$2")
t=$(mktemp -d /tmp/watchgrid-br-layout.XXXXXX)
trap 'rm -rf "$t"' EXIT
mkdir -p "$t/images/efi-part/EFI/BOOT" "$t/host/bin" "$t/host/sbin" "$t/build/systemd-stub/build/src/boot/efi"
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$t/images/efi-part/EFI/BOOT/bootx64.efi"
cp /usr/lib/systemd/boot/efi/linuxx64.efi.stub "$t/build/systemd-stub/build/src/boot/efi/"
cp "$work/boot/vmlinuz" "$t/images/bzImage"
cp "$work/root.squashfs" "$t/images/rootfs.squashfs"
ln -s "$(command -v objcopy)" "$t/host/bin/x86_64-buildroot-linux-gnu-objcopy"
ln -s "$(command -v objdump)" "$t/host/bin/x86_64-buildroot-linux-gnu-objdump"
ln -s "$(command -v mkfs.ext4)" "$t/host/sbin/mkfs.ext4"
ln -s "$(command -v debugfs)" "$t/host/sbin/debugfs"
BINARIES_DIR=$t/images HOST_DIR=$t/host BUILD_DIR=$t/build TARGET_DIR=$work/rootfs \
  bash "$here/../buildroot-config/board/watchgrid/post-image.sh" >"$t/post-image.log" 2>&1 ||
  { cat "$t/post-image.log" >&2; echo "buildroot post-image.sh failed" >&2; exit 1; }
table() { sfdisk --dump "$1" | grep -v -e '^device:' -e '^last-lba:' | sed 's|^[^ ]*img\([0-9]\) :|part\1 :|'; }
br=$(find "$t/images" -maxdepth 1 -name 'watchgrid-*-x86_64.img' | head -n1)
if ! diff <(table "$br") <(table "$img"); then
  echo "the Buildroot tree's partition table differs from image/ (above: Buildroot < > image/)" >&2
  exit 1
fi
echo "buildroot-config/ post-image.sh writes the same partition table as image/:"
table "$img" | grep '^part'
