#!/usr/bin/env bash
# Assembles the GPT disk from partition images, without loop devices: the ESP is a FAT
# file filled with mtools, the root a squashfs in slot A (slot B stays empty until the
# first update), the data partition a small ext4 that first boot grows to fill the disk.
# Layout and identities: image/layout.sh.
# Usage: image/mkdisk.sh WORK_DIR ROOT.squashfs UKI.efi VERSION OUT.img
# (WORK_DIR/cmdline: slot A's kernel command line, from image/mkbundle.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=image/layout.sh
. "$here/layout.sh"
work=$1 squashfs=$2 uki=$3 version=$4 out=$5
MiB=$((1024 * 1024))

# Root slot A: the compressed, read-only root (image/mkbundle.sh).
root_bytes=$(stat -c %s "$squashfs")
if [ "$root_bytes" -gt $((ROOT_SLOT_MIB * MiB)) ]; then
  echo "the root file system ($((root_bytes / MiB)) MiB) does not fit a root slot (ROOT_SLOT_MIB=$ROOT_SLOT_MIB)" >&2
  exit 1
fi

# The ESP: systemd-boot and one boot entry per root slot (see appliance/update/src/esp.rs):
# loader/entries/watchgrid-GENERATION-SLOT.conf boots EFI/watchgrid/watchgrid-GENERATION-SLOT.efi
# with the slot's command line. `default watchgrid-*` takes the highest generation that has
# tries left, so an update boots next and falls back by itself. The kernel images are not
# in /EFI/Linux, where systemd-boot would list them a second time without a slot.
rm -f "$work/esp.img"
mkfs.vfat -C -F 32 -n ESP -i 5a7c0b10 "$work/esp.img" $((ESP_MIB * 1024)) >/dev/null
boot=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
printf 'timeout 0\ndefault watchgrid-*\nconsole-mode keep\neditor no\n' > "$work/loader.conf"
{
  echo "title Watchgrid $version (slot A)"
  echo "version $version"
  echo "efi /EFI/watchgrid/watchgrid-1-a.efi"
  echo "options $(cat "$work/cmdline")"
} > "$work/entry-a.conf"
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/EFI/watchgrid ::/loader ::/loader/entries
mcopy -i "$work/esp.img" "$boot" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$boot" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$work/esp.img" "$work/loader.conf" ::/loader/loader.conf
mcopy -i "$work/esp.img" "$uki" ::/EFI/watchgrid/watchgrid-1-a.efi
mcopy -i "$work/esp.img" "$work/entry-a.conf" ::/loader/entries/watchgrid-1-a.conf

# The data partition: ext4 whose root belongs to the daemon's user, mode 0700.
rm -f "$work/data.ext4"
# 4 KiB blocks: it grows from 64 MiB to the whole disk.
mkfs.ext4 -q -F -b 4096 -T default -L "$DATA_LABEL" -U "${DATA_UUID,,}" \
  -E root_owner=$WATCHGRID_UID:$WATCHGRID_GID "$work/data.ext4" "${DATA_MIB}M"
debugfs -w -R "sif / mode 040700" "$work/data.ext4" >/dev/null 2>&1

# The partition table on a sparse file, then each partition written at its offset.
esp_start=1
root_a_start=$((esp_start + ESP_MIB))
root_b_start=$((root_a_start + ROOT_SLOT_MIB))
data_start=$((root_b_start + ROOT_SLOT_MIB))
total=$((data_start + DATA_MIB + 1))
rm -f "$out"
truncate -s $((total * MiB)) "$out"
sfdisk --quiet --no-reread --no-tell-kernel "$out" <<SFDISK
label: gpt
label-id: $DISK_GUID
unit: sectors
start=$((esp_start * 2048)), size=$((ESP_MIB * 2048)), type=$TYPE_ESP, uuid=$ESP_UUID, name="$ESP_LABEL"
start=$((root_a_start * 2048)), size=$((ROOT_SLOT_MIB * 2048)), type=$TYPE_ROOT_X86_64, uuid=$ROOT_A_UUID, name="$ROOT_A_LABEL"
start=$((root_b_start * 2048)), size=$((ROOT_SLOT_MIB * 2048)), type=$TYPE_ROOT_X86_64, uuid=$ROOT_B_UUID, name="$ROOT_B_LABEL"
start=$((data_start * 2048)), size=$((DATA_MIB * 2048)), type=$TYPE_LINUX_DATA, uuid=$DATA_UUID, name="$DATA_LABEL"
SFDISK
dd if="$work/esp.img" of="$out" bs=1M seek=$esp_start conv=notrunc,sparse status=none
dd if="$squashfs" of="$out" bs=1M seek=$root_a_start conv=notrunc,sparse status=none
dd if="$work/data.ext4" of="$out" bs=1M seek=$data_start conv=notrunc,sparse status=none
echo "root file system $((root_bytes / MiB)) MiB in a $ROOT_SLOT_MIB MiB slot" >&2
