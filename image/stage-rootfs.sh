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

# Kernel modules: what a VPN appliance on a VM or a small server uses. Left out are
# hardware it never has (sound, cameras, GPUs beyond the firmware framebuffer, radios,
# Fibre Channel and InfiniBand storage, industrial buses), file systems it never mounts
# (only ext4, squashfs, FAT and efivarfs are), and network protocols it never speaks.
# The module index is rebuilt.
moddir="$root/usr/lib/modules/$kver/kernel"
for d in sound drivers/gpu drivers/media drivers/net/wireless drivers/bluetooth \
  net/bluetooth net/mac80211 net/wireless drivers/infiniband drivers/staging drivers/iio \
  drivers/isdn drivers/nfc net/nfc drivers/usb/gadget drivers/input/joystick \
  drivers/input/tablet drivers/input/touchscreen drivers/hwmon drivers/video/fbdev \
  drivers/comedi drivers/mtd drivers/target drivers/firewire drivers/parport drivers/pcmcia \
  drivers/memstick drivers/ssb drivers/bcma drivers/w1 drivers/atm drivers/thunderbolt \
  drivers/soundwire drivers/slimbus drivers/gnss drivers/leds drivers/pwm drivers/spi \
  drivers/android drivers/accessibility drivers/hwtracing drivers/uio drivers/vfio \
  drivers/vhost drivers/cxl drivers/ufs drivers/pinctrl \
  drivers/scsi/lpfc drivers/scsi/qla2xxx drivers/scsi/qla4xxx drivers/scsi/bfa \
  drivers/scsi/bnx2fc drivers/scsi/fcoe drivers/scsi/csiostor drivers/scsi/be2iscsi \
  drivers/scsi/qedi drivers/scsi/qedf drivers/scsi/snic drivers/scsi/fnic drivers/scsi/cxgbi \
  drivers/scsi/bnx2i drivers/scsi/libfc drivers/scsi/elx \
  drivers/net/can drivers/net/wwan drivers/net/ieee802154 drivers/net/hamradio \
  drivers/net/arcnet drivers/net/fddi drivers/net/plip drivers/net/slip drivers/net/wan \
  drivers/net/ppp drivers/net/appletalk drivers/net/fjes drivers/net/thunderbolt \
  drivers/net/ethernet/chelsio drivers/net/ethernet/qlogic drivers/net/ethernet/netronome \
  drivers/net/ethernet/sfc drivers/net/ethernet/cavium drivers/net/ethernet/huawei \
  drivers/net/ethernet/emulex drivers/net/ethernet/pensando drivers/net/ethernet/fungible \
  net/6lowpan net/appletalk net/atm net/ax25 net/batman-adv net/can net/ceph net/dccp \
  net/ieee802154 net/mac802154 net/kcm net/l2tp net/lapb net/mpls net/netrom \
  net/openvswitch net/phonet net/qrtr net/rds net/rose net/rxrpc net/sctp net/smc \
  net/sunrpc net/tipc net/9p net/nsh net/ife net/vmw_vsock net/dns_resolver \
  arch/x86/kvm virt drivers/block/drbd; do
  rm -rf "${moddir:?}/$d"
done
rm -f "$moddir"/lib/test_*.ko
for fs in "$moddir"/fs/*; do
  case ${fs##*/} in
    ext4 | jbd2 | mbcache.ko | squashfs | fat | nls | efivarfs | autofs | overlayfs | quota) ;;
    *) rm -rf "$fs" ;;
  esac
done
# A kept module that needs a left-out one could never load: it goes too. (The full
# tree's modules.dep lists every module's dependencies, transitively.)
orphans=$(cd "$root/usr/lib/modules/$kver" && while IFS=: read -r mod deps; do
  [ -e "$mod" ] || continue
  for d in $deps; do [ -e "$d" ] || { echo "$mod"; break; }; done
done < modules.dep)
for mod in $orphans; do rm -f "$root/usr/lib/modules/$kver/$mod"; done
echo "kernel modules: $(find "$moddir" -name '*.ko' | wc -l) kept, $(wc -w <<<"$orphans") left out for a left-out dependency" >&2
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
  watchgrid-update.path watchgrid-boot-check.service \
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
# Packages a read-only appliance never runs: apt (nothing is installed at run time) and
# perl (only usrmerge needed it, at build time). dpkg's database stays accurate for the
# SBOM.
dpkg --root="$root" --force-depends --force-remove-essential --purge \
  apt libapt-pkg6.0 usrmerge libfile-find-rule-perl libnumber-compare-perl \
  libtext-glob-perl perl perl-modules-5.36 libperl5.36 perl-base >"$bootout/purge.log" 2>&1 ||
  { cat "$bootout/purge.log" >&2; exit 1; }
# Files no process reads here: iconv's charset modules (the binary is static; systemd
# does not convert charsets), the sources udev's compiled hwdb.bin was built from, and
# time zones other than UTC (the appliance keeps UTC).
rm -rf "$root/usr/lib/x86_64-linux-gnu/gconv" "$root/usr/lib/udev/hwdb.d"
find "$root/usr/share/zoneinfo" -mindepth 1 -maxdepth 1 ! -name UTC ! -name Etc ! -name 'zone*.tab' \
  ! -name tzdata.zi ! -name leap-seconds.list -exec rm -rf {} +
# What a read-only appliance never uses.
rm -rf "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"* "$root/var/log/"* \
  "$root/usr/share/doc/"*/changelog* "$root/usr/share/bash-completion" "$root/usr/share/zsh"
echo "$kver"
