//! Smooth weighted round-robin (nginx's): the sequence the round-robin
//! algorithm writes into a VIP's ring, one backend per entry.
//!
//! Each step every backend earns its weight in credit, the one with the most
//! credit (the first on a tie) is picked and pays the total weight. Picks of
//! a backend are spread evenly over the period instead of coming in runs,
//! and over one period each backend is picked exactly its weight times.
//!
//! The period is the sum of the weights after dividing them by their gcd.
//! A ring holds at most `MAX_RING_SIZE` entries: a longer period is scaled
//! down proportionally (each weight to `floor(w * budget / sum)`, at least
//! 1), so shares are then exact only to about one entry in `MAX_RING_SIZE`.

use lb_common::MAX_RING_SIZE;

/// The weights a sequence is built from: divided by their gcd, scaled down
/// when their sum exceeds `limit`. Zero weights stay zero.
pub fn reduced(weights: &[u32], limit: u32) -> Vec<u32> {
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return vec![0; weights.len()];
    }
    let mut w: Vec<u32> = weights.iter().map(|w| w / g).collect();
    let sum: u64 = w.iter().map(|&w| w as u64).sum();
    if sum > limit as u64 {
        // Room for the "at least 1" of every backend, so the sum stays <= limit.
        let positive = w.iter().filter(|&&w| w > 0).count() as u64;
        let budget = (limit as u64).saturating_sub(positive).max(1);
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = ((*x as u64 * budget / sum) as u32).max(1);
        }
        let g = w.iter().copied().filter(|&w| w > 0).fold(0, gcd);
        w.iter_mut().for_each(|x| *x /= g);
    }
    w
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The sequence of indices into `weights` (one period), at most
/// `MAX_RING_SIZE` long; empty when every weight is 0.
pub fn sequence(weights: &[u32]) -> Vec<usize> {
    sequence_within(weights, MAX_RING_SIZE)
}

/// [`sequence`] with another length limit.
pub fn sequence_within(weights: &[u32], limit: u32) -> Vec<usize> {
    let w = reduced(weights, limit);
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut credit = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for (i, &x) in w.iter().enumerate().filter(|(_, x)| **x > 0) {
            credit[i] += x as i64;
            if best == usize::MAX || credit[i] > credit[best] {
                best = i;
            }
        }
        credit[best] -= total;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests;
