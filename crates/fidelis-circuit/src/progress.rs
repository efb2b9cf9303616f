//! The [`Progress`] contract (defined in `fidelis-models`, re-exported here) and
//! [`report`], which turns a request to stop into [`CircuitError::Cancelled`].

pub use fidelis_models::progress::{Progress, Silent};

use std::ops::ControlFlow;

use crate::{CircuitError, Result};

/// Ticks `progress` and turns a request to stop into [`CircuitError::Cancelled`].
pub fn report(progress: &mut dyn Progress, stage: &str, done: usize, total: usize) -> Result<()> {
    match progress.tick(stage, done, total) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(CircuitError::Cancelled),
    }
}
