//! What the sample unit must keep doing, whatever its code becomes.

use ghost_sample::count_primes;

#[test]
fn small_values() {
    let want = [0, 0, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5];
    for (n, w) in want.iter().enumerate() {
        assert_eq!(count_primes(n as u64), *w, "primes up to {n}");
    }
}

#[test]
fn known_counts() {
    assert_eq!(count_primes(100), 25);
    assert_eq!(count_primes(1_000), 168);
    assert_eq!(count_primes(7_919), 1_000);
    assert_eq!(count_primes(10_000), 1_229);
}
