//! BPF atomic instructions. The target has no atomic read-modify-write in
//! `core`, hence the asm (aya-ebpf uses it too).

/// `*counter += delta` atomically (BPF_ATOMIC add without fetch: any CPU
/// version of the instruction set).
#[inline(always)]
pub fn add(counter: *mut u64, delta: u64) {
    // SAFETY: callers pass an aligned u64 in map memory that outlives the
    // program run.
    unsafe {
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) counter, in(reg) delta);
    }
}

/// `*word += delta` atomically; returns the value before. Fetching atomics
/// are fully ordered: the connection table's writers publish with it.
#[inline(always)]
pub fn fetch_add(word: *mut u64, delta: u64) -> u64 {
    let mut v = delta;
    // SAFETY: as in `add`.
    unsafe {
        core::arch::asm!("{0} = atomic_fetch_add((u64 *)({1} + 0), {0})", inout(reg) v, in(reg) word);
    }
    v
}

/// Sets `*word` to `new` if it holds `expected`; returns whether it did.
/// Fully ordered (BPF_CMPXCHG always fetches).
#[inline(always)]
pub fn compare_exchange(word: *mut u64, expected: u64, new: u64) -> bool {
    let mut found = expected;
    // SAFETY: as in `add`. The instruction compares with and returns into r0.
    unsafe {
        core::arch::asm!("r0 = cmpxchg_64({w} + 0, r0, {n})", w = in(reg) word, n = in(reg) new, inout("r0") found);
    }
    found == expected
}
