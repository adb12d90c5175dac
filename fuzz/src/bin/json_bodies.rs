//! AFL target: see `watchgrid_fuzz::json_bodies`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        watchgrid_fuzz::json_bodies(data);
    });
}
