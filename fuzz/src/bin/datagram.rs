//! AFL target: see `watchgrid_fuzz::datagram`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        watchgrid_fuzz::datagram(data);
    });
}
