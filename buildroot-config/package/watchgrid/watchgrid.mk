################################################################################
#
# watchgrid
#
################################################################################

# Built from this repository (the tree above buildroot-config/), not a tarball.
WATCHGRID_VERSION = 0.1.0
WATCHGRID_SITE = $(BR2_EXTERNAL_WATCHGRID_PATH)/..
WATCHGRID_SITE_METHOD = local
WATCHGRID_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude target --exclude build
WATCHGRID_LICENSE = Proprietary
# The binary is one member of the cargo workspace; `cargo install --path` builds it
# with the workspace's Cargo.lock (--locked).
WATCHGRID_SUBDIR = appliance/watchgrid
# The workspace's .cargo/config.toml asks for a static glibc binary; keep that.
WATCHGRID_CARGO_ENV = RUSTFLAGS="-C target-feature=+crt-static"

$(eval $(cargo-package))
