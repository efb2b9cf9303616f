//! Progress bars for anything that takes longer than a second, and [`Bar`], the terminal's
//! implementation of the libraries' [`Progress`] contract.

use std::ops::ControlFlow;

use fidelis_models::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar that follows a library call: its message is the call's current stage, its
/// length and position the stage's counts. It never stops the work (Ctrl-C does).
pub struct Bar(pub ProgressBar);

impl Bar {
    /// A bar with `message` until the first tick names a stage.
    pub fn new(message: &str) -> Self {
        Self(bar(1, message))
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn tick(&mut self, stage: &str, done: usize, total: usize) -> ControlFlow<()> {
        if self.0.message() != stage {
            self.0.set_message(stage.to_string());
        }
        self.0.set_length(total.max(1) as u64);
        self.0.set_position(done.min(total) as u64);
        ControlFlow::Continue(())
    }
}

/// A bar over `total` units with a message; hidden when stderr is not a terminal.
pub fn bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg:>12} [{elapsed_precise}] {wide_bar} {percent:>3}% (eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_string());
    bar
}

/// A spinner with a message, for work of unknown length.
pub fn spinner(message: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(message.to_string());
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}
