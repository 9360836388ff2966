use super::*;

fn counts(seq: &[usize], n: usize) -> Vec<usize> {
    (0..n).map(|i| seq.iter().filter(|&&x| x == i).count()).collect()
}

#[test]
fn exact_interleaving() {
    // The nginx reference: weights 5, 1, 1 give a a b a c a a.
    assert_eq!(sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(sequence(&[2, 1, 1]), vec![0, 1, 2, 0]);
    assert_eq!(sequence(&[1, 1, 1]), vec![0, 1, 2]);
    assert_eq!(sequence(&[3, 2]), vec![0, 1, 0, 1, 0]);
}

#[test]
fn weights_give_exact_counts_and_zero_is_skipped() {
    let seq = sequence(&[7, 0, 3, 5]);
    assert_eq!(seq.len(), 15);
    assert_eq!(counts(&seq, 4), vec![7, 0, 3, 5]);
    // Evenly spread: no backend twice in a row unless it holds over half.
    assert!(seq.windows(2).all(|p| p[0] != p[1] || p[0] == 0), "{seq:?}");
    assert!(sequence(&[0, 0]).is_empty());
    assert!(sequence(&[]).is_empty());
}

#[test]
fn gcd_shortens_the_period() {
    assert_eq!(sequence(&[4, 2, 2]), sequence(&[2, 1, 1]));
    assert_eq!(sequence(&[300, 200, 0]).len(), 5);
    assert_eq!(reduced(&[10_000, 5_000, 0], 10), vec![2, 1, 0]);
}

#[test]
fn long_periods_are_scaled_down_proportionally() {
    // 10000 + 9999 + 1: period 20000, no common divisor.
    let w = [10_000, 9_999, 1];
    assert_eq!(sequence_within(&w, 100_000).len(), 20_000);
    let seq = sequence_within(&w, 1000);
    assert!(seq.len() <= 1000, "{}", seq.len());
    let c = counts(&seq, 3);
    assert!(c[2] >= 1, "a positive weight keeps at least one entry: {c:?}");
    let share = c[0] as f64 / seq.len() as f64;
    assert!((share - 0.5).abs() < 0.01, "share of the first: {share}");
    // The shipped limit.
    let big: Vec<u32> = (0..512).map(|i| 10_000 - i).collect();
    let seq = sequence(&big);
    assert!(seq.len() <= MAX_RING_SIZE as usize && counts(&seq, 512).iter().all(|&c| c >= 1));
}
