//! AFL target: see `watchgrid_fuzz::uapi_set`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        watchgrid_fuzz::uapi_set(data);
    });
}
