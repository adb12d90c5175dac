#!/usr/bin/env bash
# Makes one release of the appliance from a staged root: the root squashfs (os-release
# saying the version), the unified kernel image, and the signed update bundle that
# carries both. image/build runs it for the disk image; the boot test runs it again for
# the versions it updates to.
# Usage: image/mkbundle.sh ROOTFS_DIR BOOT_DIR VERSION SIGNING_KEY WORK_DIR BUNDLE_OUT
#   BOOT_DIR holds vmlinuz and initrd (image/stage-rootfs.sh); WORK_DIR gets
#   root.squashfs (with its dm-verity hash tree), watchgrid.efi, cmdline (slot A's) and
#   os-release. WATCHGRID_BIN signs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=image/layout.sh
. "$here/layout.sh"
root=$1 boot=$2 version=$3 key=$4 work=$5 out=$6
bin=${WATCHGRID_BIN:?WATCHGRID_BIN names the watchgrid binary that signs}
mkdir -p "$work"

# The version, where the daemon and the boot menu read it.
{
  grep -v -e '^PRETTY_NAME=' -e '^IMAGE_' "$root/usr/lib/os-release"
  echo "PRETTY_NAME=\"Watchgrid $version\""
  echo "IMAGE_ID=watchgrid"
  echo "IMAGE_VERSION=$version"
} > "$work/os-release"
install -m 0644 "$work/os-release" "$root/usr/lib/os-release"

rm -f "$work/root.squashfs"
mksquashfs "$root" "$work/root.squashfs" -comp zstd -Xcompression-level 15 -b 256K \
  -noappend -no-progress -quiet >&2

# dm-verity: the hash tree follows the squashfs (padded to 4 KiB blocks by mksquashfs) in
# the same file, so a slot holds both; the command line carries the root hash, and the
# signed manifest carries the command line (image/initramfs/watchgrid-verity checks it).
data_bytes=$(stat -c %s "$work/root.squashfs")
[ $((data_bytes % 4096)) -eq 0 ] || { echo "the squashfs is not a whole number of 4 KiB blocks" >&2; exit 1; }
blocks=$((data_bytes / 4096))
veritysetup format --no-superblock --hash-offset="$data_bytes" --data-blocks="$blocks" \
  "$work/root.squashfs" "$work/root.squashfs" > "$work/verity.txt"
root_hash=$(sed -n 's/^Root hash:[[:space:]]*//p' "$work/verity.txt")
salt=$(sed -n 's/^Salt:[[:space:]]*//p' "$work/verity.txt")
[ -n "$root_hash" ] && [ -n "$salt" ] || { cat "$work/verity.txt" >&2; exit 1; }
template="$(kernel_cmdline_template) watchgrid.verity=$blocks:$blocks:$root_hash:$salt"
# Slot A's, built into the kernel image and used by the image's first boot entry.
echo "${template/@SLOT_PARTUUID@/${ROOT_A_UUID,,}}" > "$work/cmdline"
"$here/mkuki.sh" "$boot/vmlinuz" "$boot/initrd" "$work/cmdline" "$work/os-release" "$work/watchgrid.efi"

"$bin" update bundle --key "$key" --version "$version" --cmdline "$template" \
  --slot-a "${ROOT_A_UUID,,}" --slot-b "${ROOT_B_UUID,,}" \
  --root "$work/root.squashfs" --uki "$work/watchgrid.efi" --out "$out"
