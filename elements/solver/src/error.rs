//! Typed errors of the solvers (k-style: one non-exhaustive enum, named fields).

/// Why a solver refused its input or stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SolverError {
    /// An input has the wrong number of rows.
    #[error("{input} has {got} rows, expected {expected}")]
    SizeMismatch {
        /// Which input.
        input: &'static str,
        /// Rows given.
        got: usize,
        /// What was expected, in words (for example "24 or 29").
        expected: &'static str,
    },
    /// An input holds NaN or an infinity.
    #[error("{input} row {row} is not finite")]
    NonFinite {
        /// Which input.
        input: &'static str,
        /// The first offending row.
        row: usize,
    },
    /// An option is out of range or does not combine with the others.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The damped normal equations could not be factorised (only possible without damping or
    /// with a non-finite Jacobian).
    #[error("Cholesky factorisation failed at Gauss-Newton iteration {iteration}")]
    NotPositiveDefinite {
        /// The iteration (0-based).
        iteration: usize,
    },
    /// The body model cannot serve the fit (an anchor off the model, a bad basis).
    #[error("body model: {0}")]
    Input(String),
    /// The fit has too little to go on (no 2D keypoint with positive weight, a person a pixel
    /// wide) or its input is not finite.
    #[error("nothing to fit: {0}")]
    NothingToFit(String),
    /// The fit ended with non-finite values.
    #[error("the fit diverged: {0}")]
    Diverged(String),
}
