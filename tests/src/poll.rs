//! Bounded polling: the one way the tests wait for a state.

use std::time::{Duration, Instant};

/// Calls `probe` every `every` until it returns `Ok`, for at most
/// `limit`; `Err` carries the last value `probe` saw (for the message).
pub fn until<T, L>(limit: Duration, every: Duration, mut probe: impl FnMut() -> Result<T, L>) -> Result<T, L> {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(t) => return Ok(t),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => std::thread::sleep(every),
        }
    }
}
