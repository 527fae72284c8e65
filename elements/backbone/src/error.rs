//! The crate's typed error.

use std::path::PathBuf;

/// Errors of ikol-backbone. Checkpoint problems name the file and every offending key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed (shape bug, device error, ...).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// The weights file cannot be read or parsed at all (missing, truncated, not a checkpoint).
    #[error("checkpoint {path}: {reason}")]
    CheckpointUnreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong, e.g. the zip or pickle error.
        reason: String,
    },

    /// The weights file parsed but does not fit the network: keys missing, keys not used, or
    /// tensors of the wrong shape. All problems are listed, not just the first.
    #[error("checkpoint {path} does not fit the {variant} network: {}", describe_mismatch(.missing, .unexpected, .shape_mismatches))]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
        /// The variant it was loaded as.
        variant: String,
        /// Keys the network needs that the file lacks (after stripping `module.` prefixes).
        missing: Vec<String>,
        /// Keys in the file that the network does not use (known extras such as `smpl.*`
        /// buffers and `num_batches_tracked` are ignored and never listed).
        unexpected: Vec<String>,
        /// `(key, expected shape, shape in the file)`.
        shape_mismatches: Vec<(String, Vec<usize>, Vec<usize>)>,
    },

    /// CUDA was asked for but this build has no CUDA support or no GPU is usable.
    #[error("CUDA device {ordinal} requested: {reason}")]
    CudaUnavailable {
        /// The requested device index.
        ordinal: usize,
        /// Why it is not usable.
        reason: String,
    },

    /// An input (frame, box, configuration, device string) is not usable.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// File system error while writing or reading something other than a checkpoint.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, Error>;

fn describe_mismatch(
    missing: &[String],
    unexpected: &[String],
    shapes: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    fn list(v: &[String]) -> String {
        const MAX: usize = 12;
        let mut s = v.iter().take(MAX).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > MAX {
            s.push_str(&format!(", ... ({} more)", v.len() - MAX));
        }
        s
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} missing key(s): {}",
            missing.len(),
            list(missing)
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "{} unexpected key(s): {}",
            unexpected.len(),
            list(unexpected)
        ));
    }
    if !shapes.is_empty() {
        let v: Vec<String> = shapes
            .iter()
            .map(|(k, want, got)| format!("{k} expected {want:?} found {got:?}"))
            .collect();
        parts.push(format!("{} shape mismatch(es): {}", v.len(), list(&v)));
    }
    parts.join("; ")
}
