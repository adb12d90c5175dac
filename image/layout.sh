# shellcheck shell=bash disable=SC2034 # sourced: the values are used by its includers
# The disk layout of the appliance image, shared by image/ scripts and the boot test.
# buildroot-config/board/watchgrid/genimage.cfg repeats these values; keep them in step.

# GPT partition type GUIDs (UEFI spec and the Discoverable Partitions Specification).
TYPE_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
TYPE_ROOT_X86_64=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
TYPE_LINUX_DATA=0FC63DAF-8483-4772-8E79-3D69D8477DE4

# Fixed identities: the unified kernel image names slot A by PARTUUID, and first boot
# finds the data partition by its label.
DISK_GUID=5A7C0B10-5E2B-4C39-9E4F-57A7C4C0D000
ESP_UUID=5A7C0B10-5E2B-4C39-9E4F-57A7C4C0D001
ROOT_A_UUID=5A7C0B10-5E2B-4C39-9E4F-57A7C4C0D00A
ROOT_B_UUID=5A7C0B10-5E2B-4C39-9E4F-57A7C4C0D00B
DATA_UUID=5A7C0B10-5E2B-4C39-9E4F-57A7C4C0D0DA
ESP_LABEL=esp
ROOT_A_LABEL=watchgrid-root-a
ROOT_B_LABEL=watchgrid-root-b
DATA_LABEL=watchgrid-data

# Sizes in MiB. The data partition starts small and is grown to fill the disk on first
# boot; each root slot must hold a whole compressed root file system.
ESP_MIB=${ESP_MIB:-128}
ROOT_SLOT_MIB=${ROOT_SLOT_MIB:-384}
DATA_MIB=${DATA_MIB:-64}

# The daemon's user (fixed ids: the data file system is created owned by them).
WATCHGRID_UID=990
WATCHGRID_GID=990

# Kernel command line, with @SLOT_PARTUUID@ where the root slot's PARTUUID goes (an update
# bundle carries this; each slot's boot entry fills it in).
kernel_cmdline_template() {
  echo "root=PARTUUID=@SLOT_PARTUUID@ rootfstype=squashfs ro console=tty0 console=ttyS0,115200n8 systemd.gpt_auto=0 panic=30"
}

# Kernel command line of slot A (built into the unified kernel image, which boots slot A
# when started without an entry's options).
kernel_cmdline() {
  kernel_cmdline_template | sed "s/@SLOT_PARTUUID@/${ROOT_A_UUID,,}/"
}
