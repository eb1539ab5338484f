//! The sample unit's one function: how many primes there are up to `n`.

/// The number of primes p ≤ n. Deliberately slow: every k is tried against every number below
/// it, even after a divisor has been found.
pub fn count_primes(n: u64) -> u64 {
    (2..=n).filter(|&k| (2..k).filter(|d| k % d == 0).count() == 0).count() as u64
}
