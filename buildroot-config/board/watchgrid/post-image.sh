#!/usr/bin/env bash
# Buildroot post-image: the unified kernel image (with image/mkuki.sh, shared with the
# Debian build) and the GPT disk from genimage.cfg.in filled in with image/layout.sh.
set -euo pipefail
board="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$board/../../.." && pwd)"
# shellcheck source=image/layout.sh
. "$repo/image/layout.sh"
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
cd "$BINARIES_DIR"

# The kernel has the root's drivers built in (linux.fragment): no initrd. Buildroot's
# root file system has /usr/lib/os-release like Debian's.
kernel_cmdline > cmdline
{
  grep -v -e '^PRETTY_NAME=' -e '^IMAGE_' "$TARGET_DIR/usr/lib/os-release"
  echo "PRETTY_NAME=\"Watchgrid $version (slot A)\""
  echo "IMAGE_ID=watchgrid"
  echo "IMAGE_VERSION=$version"
} > os-release
stub=$(find "$BINARIES_DIR" "$HOST_DIR" "$BUILD_DIR"/systemd-*/build -name linuxx64.efi.stub 2>/dev/null | head -n1 || true)
[ -n "$stub" ] || { echo "no systemd EFI stub (BR2_PACKAGE_SYSTEMD_BOOT)" >&2; exit 1; }
UKI_STUB=$stub OBJCOPY="$HOST_DIR/bin/x86_64-buildroot-linux-gnu-objcopy" \
  OBJDUMP="$HOST_DIR/bin/x86_64-buildroot-linux-gnu-objdump" \
  "$repo/image/mkuki.sh" bzImage - cmdline os-release watchgrid-a.efi
printf 'timeout 0\ndefault watchgrid-*\nconsole-mode keep\neditor no\n' > loader.conf

sed -e "s/@VERSION@/$version/g" -e "s/@ESP_MIB@/$ESP_MIB/g" -e "s/@ROOT_SLOT_MIB@/$ROOT_SLOT_MIB/g" \
  -e "s/@DATA_MIB@/$DATA_MIB/g" -e "s/@DATA_LABEL@/$DATA_LABEL/g" \
  -e "s/@DISK_GUID@/$DISK_GUID/g" -e "s/@TYPE_ESP@/$TYPE_ESP/g" -e "s/@ESP_UUID@/$ESP_UUID/g" \
  -e "s/@TYPE_ROOT_X86_64@/$TYPE_ROOT_X86_64/g" -e "s/@ROOT_A_UUID@/$ROOT_A_UUID/g" \
  -e "s/@ROOT_B_UUID@/$ROOT_B_UUID/g" -e "s/@ROOT_A_LABEL@/$ROOT_A_LABEL/g" \
  -e "s/@ROOT_B_LABEL@/$ROOT_B_LABEL/g" -e "s/@TYPE_LINUX_DATA@/$TYPE_LINUX_DATA/g" \
  -e "s/@DATA_UUID@/$DATA_UUID/g" "$board/genimage.cfg.in" > genimage.cfg

# The data partition: small ext4 (grown on first boot), root owned by the daemon, 0700.
rm -f data.ext4
"$HOST_DIR/sbin/mkfs.ext4" -q -F -b 4096 -T default -L "$DATA_LABEL" -U "${DATA_UUID,,}" \
  -E "root_owner=$WATCHGRID_UID:$WATCHGRID_GID" data.ext4 "${DATA_MIB}M"
"$HOST_DIR/sbin/debugfs" -w -R "sif / mode 040700" data.ext4 >/dev/null

rm -rf "$BUILD_DIR/genimage.tmp"
genimage --rootpath "$TARGET_DIR" --tmppath "$BUILD_DIR/genimage.tmp" \
  --inputpath "$BINARIES_DIR" --outputpath "$BINARIES_DIR" --config genimage.cfg
"$HOST_DIR/bin/qemu-img" convert -f raw -O qcow2 -c "watchgrid-$version-x86_64.img" \
  "watchgrid-$version-x86_64.qcow2" 2>/dev/null || echo "(no host qemu-img: only the raw image)"
