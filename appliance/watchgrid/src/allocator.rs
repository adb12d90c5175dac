//! glibc's allocator, set up for a server that holds thousands of connections.

/// At most this many malloc arenas (glibc's default is eight per core).
const ARENAS: i32 = 2;

/// Caps glibc's malloc arenas. Under contention glibc gives a thread its own arena, and
/// an arena keeps what was freed in it for that arena alone. Tokio moves connections'
/// buffers between its workers and blocking threads, so with the default each of them
/// kept its own high-water mark: `scripts/bench-agents 5000` measured the hub at 305 MiB
/// with the default and 264 MiB with two arenas, for the same live data.
/// Call it first in `main`, before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter and takes no pointers; no other
    // thread exists yet to race with it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}
