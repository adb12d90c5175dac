#!/usr/bin/env bash
# A unified kernel image: systemd's EFI stub + os-release + command line + kernel + initrd,
# assembled with objcopy (what ukify does). Sections are placed after the stub's own,
# each aligned, in the order the stub expects.
# Usage: image/mkuki.sh VMLINUZ INITRD|- CMDLINE OS_RELEASE OUT.efi
# (INITRD "-": none, for kernels with the root's drivers built in; UKI_STUB and OBJCOPY
# override the stub and the tool, as the Buildroot build does.)
set -euo pipefail
vmlinuz=$1 initrd=$2 cmdline=$3 osrel=$4 out=$5
stub=${UKI_STUB:-/usr/lib/systemd/boot/efi/linuxx64.efi.stub}
objcopy=${OBJCOPY:-objcopy}
objdump=${OBJDUMP:-objdump}
[ -f "$stub" ] || { echo "missing $stub (apt-get install systemd-boot-efi)" >&2; exit 1; }

align() { echo $(( ($1 + 0xfffff) / 0x100000 * 0x100000 )); }
# End of the stub's last section (VMA + size), from objdump's section table.
end=0
while read -r idx _name size vma _; do
  case $idx in *[!0-9]*|'') continue ;; esac
  e=$((0x$vma + 0x$size))
  if [ "$e" -gt "$end" ]; then end=$e; fi
done < <("$objdump" -h -w "$stub")
[ "$end" -gt 0 ] || { echo "could not read the section table of $stub" >&2; exit 1; }
off_osrel=$(align "$end")
off_cmdline=$(align $((off_osrel + $(stat -c %s "$osrel"))))
off_linux=$(align $((off_cmdline + $(stat -c %s "$cmdline"))))
off_initrd=$(align $((off_linux + $(stat -c %s "$vmlinuz"))))
initrd_args=()
if [ "$initrd" != - ]; then
  initrd_args=(--add-section .initrd="$initrd" --change-section-vma .initrd="$(printf 0x%x "$off_initrd")")
fi
"$objcopy" \
  --add-section .osrel="$osrel" --change-section-vma .osrel="$(printf 0x%x "$off_osrel")" \
  --add-section .cmdline="$cmdline" --change-section-vma .cmdline="$(printf 0x%x "$off_cmdline")" \
  --add-section .linux="$vmlinuz" --change-section-vma .linux="$(printf 0x%x "$off_linux")" \
  "${initrd_args[@]}" \
  "$stub" "$out"
