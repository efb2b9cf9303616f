//! One progress and cancellation contract for every long library call.
//!
//! A long call (loading a model, edge attribution, exact patching, a faithfulness curve,
//! context attribution) takes `&mut dyn Progress` and calls [`Progress::tick`] after each unit
//! of work with the stage it is in and how far it got. Returning [`ControlFlow::Break`] stops
//! the work: the call returns its crate's cancellation error at its next tick, by returning,
//! never by unwinding. The CLI's progress bars and the web server's job table are two
//! implementations. The trait lives here, at the bottom of the crate stack, so that every
//! crate above (and model loading itself) shares it; `fidelis-circuit` re-exports it.
//!
//! ```
//! use std::ops::ControlFlow;
//! use fidelis_models::progress::{Progress, Silent};
//!
//! let mut seen = Vec::new();
//! let mut record = |stage: &str, done: usize, total: usize| {
//!     seen.push(format!("{stage} {done}/{total}"));
//!     if done < 2 { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
//! };
//! assert!(record.tick("scoring edges", 1, 3).is_continue());
//! assert!(record.tick("scoring edges", 2, 3).is_break());
//! assert!(Silent.tick("anything", 0, 0).is_continue());
//! ```

use std::ops::ControlFlow;

/// Receives progress of a long computation and may stop it.
pub trait Progress {
    /// `done` of `total` units of `stage` are finished (`total` is 0 when the stage has no
    /// count). Return [`ControlFlow::Break`] to stop the computation.
    fn tick(&mut self, stage: &str, done: usize, total: usize) -> ControlFlow<()>;
}

impl<F: FnMut(&str, usize, usize) -> ControlFlow<()>> Progress for F {
    fn tick(&mut self, stage: &str, done: usize, total: usize) -> ControlFlow<()> {
        self(stage, done, total)
    }
}

/// Progress that reports nowhere and never stops the work.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn tick(&mut self, _stage: &str, _done: usize, _total: usize) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}
