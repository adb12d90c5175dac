#!/usr/bin/env bash
# Turns the cached Debian base into the appliance root: rootfs-overlay/, the watchgrid
# binary, its user, enabled units, no login; kernel and initrd are moved out for the
# unified kernel image.
# Usage: image/stage-rootfs.sh BASE_TAR WATCHGRID_BIN ROOTFS_DIR BOOT_OUT_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base=$1 bin=$2 root=$3 bootout=$4
overlay="$here/../rootfs-overlay"

rm -rf "$root" "$bootout"
mkdir -p "$root" "$bootout"
tar -C "$root" -xf "$base"

# Kernel and initrd leave the root: they boot from the ESP inside the UKI.
kver=$(basename "$(find "$root/boot" -name 'vmlinuz-*' | sort | tail -n1)")
kver=${kver#vmlinuz-}
[ -n "$kver" ] || { echo "no kernel in the base root file system" >&2; exit 1; }
cp "$root/boot/vmlinuz-$kver" "$bootout/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$bootout/initrd"
echo "$kver" > "$bootout/kernel-version"
rm -rf "${root:?}/boot/"*

# Kernel modules for hardware an appliance never has (sound, cameras, GPUs beyond the
# firmware framebuffer, radios) are left out; the module index is rebuilt.
moddir="$root/usr/lib/modules/$kver/kernel"
for d in sound drivers/gpu drivers/media drivers/net/wireless drivers/bluetooth \
  net/bluetooth net/mac80211 net/wireless drivers/infiniband drivers/staging drivers/iio \
  drivers/isdn drivers/nfc net/nfc drivers/usb/gadget drivers/input/joystick \
  drivers/input/tablet drivers/input/touchscreen drivers/hwmon drivers/video/fbdev; do
  rm -rf "${moddir:?}/$d"
done
depmod -b "$root" "$kver"

# The overlay, owned by root whoever checked it out.
cp -a --no-preserve=ownership "$overlay/." "$root/"
chown -R root:root "$root/etc/systemd" "$root/etc/watchgrid" "$root/usr/lib/watchgrid" "$root/usr/libexec/watchgrid"
install -m 0755 -o root -g root "$bin" "$root/usr/bin/watchgrid"

# Users come from sysusers.d now: the root is read-only at run time.
systemd-sysusers --root="$root"
# No password login anywhere: root is locked, consoles show the banner instead of getty.
sed -i 's|^root:[^:]*:|root:!*:|' "$root/etc/shadow"

systemctl --root="$root" enable watchgrid.service watchgrid-selfcheck.service watchgrid-backup.timer \
  watchgrid-console@tty1.service systemd-networkd.service >/dev/null 2>&1
systemctl --root="$root" mask getty@tty1.service serial-getty@ttyS0.service \
  getty-static.service systemd-machine-id-commit.service >/dev/null 2>&1
# No getty on extra virtual terminals either (logind's autovt).
ln -sf /dev/null "$root/etc/systemd/system/autovt@.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@.service"
systemctl --root="$root" set-default multi-user.target >/dev/null 2>&1

# The machine id is made at boot (in memory: the root is read-only).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Mount points on the read-only root.
mkdir -p "$root/var/lib/watchgrid" "$root/efi"
# What a read-only appliance never uses.
rm -rf "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"* "$root/var/log/"* \
  "$root/usr/share/doc/"*/changelog* "$root/usr/share/bash-completion" "$root/usr/share/zsh"
echo "$kver"
