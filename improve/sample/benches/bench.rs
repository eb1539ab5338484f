//! The sample unit's benchmark: one fixed workload. The crucible times this whole process,
//! candidate and incumbent interleaved, so nothing in here reports its own time.

fn main() {
    let mut total = 0;
    for n in [3_000u64, 4_000, 5_000] {
        total += ghost_sample::count_primes(std::hint::black_box(n));
    }
    // 430 + 550 + 669: a wrong answer is no benchmark.
    if total != 1_649 {
        eprintln!("ghost-sample-bench: wrong answer {total}");
        std::process::exit(1);
    }
}
