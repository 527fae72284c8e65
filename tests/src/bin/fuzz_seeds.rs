//! Copies the seed files of a fuzz target (`ikol_tests::fuzz::seed_files`) into a corpus
//! folder: `fuzz-seeds TARGET DIR` (used by `make fuzz`).

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, dir] = args.as_slice() else {
        bail!("usage: fuzz-seeds TARGET DIR");
    };
    if !ikol_tests::fuzz::TARGETS.iter().any(|(n, _)| n == target) {
        bail!("unknown fuzz target `{target}`");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    for (i, f) in ikol_tests::fuzz::seed_files(target).iter().enumerate() {
        let to = std::path::Path::new(dir).join(format!("seed-{i}"));
        std::fs::copy(f, &to).with_context(|| format!("copying {}", f.display()))?;
    }
    Ok(())
}
