//! The fuzz targets in `make test`: every committed case in `tests/data/fuzz/<target>/`
//! (regressions: inputs that once crashed or hung a parser) is replayed, then a short
//! deterministic mutation round runs from the seeds (a few seconds per target; the
//! coverage-guided fuzzing with libFuzzer is `make fuzz`). A panic fails the test and the
//! input is saved under `target/fuzz-failures/` to be added to `tests/data/fuzz/`.

use std::time::{Duration, Instant};

use ikol_tests::fuzz::{Mutator, TARGETS, seed_files};

/// Time per target of the mutation round.
const ROUND: Duration = Duration::from_secs(4);

fn save_failure(target: &str, data: &[u8]) -> String {
    let dir = ikol_tests::fuzz::repo()
        .join("target/fuzz-failures")
        .join(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("case-{:016x}", fxhash(data)));
    let _ = std::fs::write(&path, data);
    path.display().to_string()
}

fn fxhash(d: &[u8]) -> u64 {
    d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn fuzz_regressions_and_a_short_round() {
    // The panics are caught and reported with their input instead of aborting the run.
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        let seeds: Vec<Vec<u8>> = seed_files(name)
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .collect();
        assert!(
            !seeds.is_empty(),
            "{name}: no seed files (run `make models`)"
        );
        let mut run = |data: &[u8]| {
            if std::panic::catch_unwind(|| target(data)).is_err() {
                failures.push(format!("{name}: panicked on {}", save_failure(name, data)));
            }
        };
        for s in &seeds {
            run(s);
        }
        let mut m = Mutator::new(0x9e37_79b9_7f4a_7c15 ^ fxhash(name.as_bytes()));
        let (start, mut execs) = (Instant::now(), 0u64);
        while start.elapsed() < ROUND {
            let seed = &seeds[execs as usize % seeds.len()];
            run(&m.mutate(seed));
            execs += 1;
        }
        report.push(format!(
            "{name}: {} seeds, {execs} mutated inputs",
            seeds.len()
        ));
    }
    let _ = std::panic::take_hook();
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
