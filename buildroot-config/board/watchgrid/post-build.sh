#!/usr/bin/env bash
# Buildroot post-build: the same finishing touches as image/stage-rootfs.sh on Debian —
# no login anywhere, machine id made at boot, mount points on the read-only root.
set -euo pipefail
target=$1
for unit in getty@.service serial-getty@.service autovt@.service systemd-machine-id-commit.service; do
  ln -sf /dev/null "$target/etc/systemd/system/$unit"
done
mkdir -p "$target/etc/systemd/system/getty.target.wants" "$target/etc/systemd/system/multi-user.target.wants"
ln -sf /usr/lib/systemd/system/watchgrid-console@.service \
  "$target/etc/systemd/system/getty.target.wants/watchgrid-console@tty1.service"
for unit in watchgrid.service watchgrid-selfcheck.service; do
  ln -sf "/usr/lib/systemd/system/$unit" "$target/etc/systemd/system/multi-user.target.wants/$unit"
done
# The daemon starts after DHCP (bounded to 20 s by the rootfs-overlay drop-in).
mkdir -p "$target/etc/systemd/system/network-online.target.wants"
ln -sf /usr/lib/systemd/system/systemd-networkd-wait-online.service \
  "$target/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service"
: > "$target/etc/machine-id"
mkdir -p "$target/var/lib/watchgrid" "$target/efi"
