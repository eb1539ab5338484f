//! A service for the restart-latency benchmark: appends "PID MONOTONIC_NS" to the file named
//! by its first argument as the first thing it does, then sleeps until killed.

fn main() {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ns = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
    if let Some(path) = std::env::args().nth(1) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{} {ns}", std::process::id());
        }
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
