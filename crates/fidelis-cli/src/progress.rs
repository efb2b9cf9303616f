//! Progress bars for anything that takes longer than a second, [`Bar`] (the terminal's
//! implementation of the libraries' [`Progress`] contract), and the one-line summary every long
//! command ends with.
//!
//! Bars draw on stderr only when it is a terminal (indicatif's own check) and the global
//! `--quiet` flag is off ([`set_quiet`]); the summary ([`summary`]) goes to stderr unless
//! `--quiet`, terminal or not, so that logs keep the wall time. Results go to stdout.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use fidelis_models::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a bar or spinner redraws when no tick arrives, so that a long first unit of work
/// (one forward of a large model) still shows the elapsed time moving.
const REDRAW_INTERVAL: Duration = Duration::from_millis(200);

/// Whether `--quiet` was given: no bars, no summaries.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Turns bars, spinners and summaries off (`--quiet`) or back on, for the whole process.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` is in force.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Where bars draw: nowhere under `--quiet`, else stderr (which indicatif leaves untouched when
/// it is not a terminal).
fn target() -> ProgressDrawTarget {
    if quiet() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}

/// A bar's template: stage, elapsed time, bar, counts, rate-based estimate.
const BAR_TEMPLATE: &str =
    "{msg:>20} [{elapsed_precise}] {wide_bar} {pos}/{len} {percent:>3}% (eta {eta})";
/// A spinner's template, for stages without a count.
const SPINNER_TEMPLATE: &str = "{spinner} {msg} [{elapsed_precise}]";

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(BAR_TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template(SPINNER_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// A progress bar that follows a library call: its message is the call's current stage, its
/// length and position the stage's counts (a spinner while a stage has no count). It never
/// stops the work (Ctrl-C does).
pub struct Bar {
    bar: ProgressBar,
    /// Whether the bar is drawn as a spinner (the current stage has no count).
    spinning: bool,
}

impl Bar {
    /// A bar with `message` until the first tick names a stage.
    pub fn new(message: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(1), target());
        bar.set_style(spinner_style());
        bar.set_message(message.to_string());
        bar.enable_steady_tick(REDRAW_INTERVAL);
        Self {
            bar,
            spinning: true,
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn tick(&mut self, stage: &str, done: usize, total: usize) -> ControlFlow<()> {
        if self.bar.message() != stage {
            self.bar.set_message(stage.to_string());
        }
        let spinning = total == 0;
        if spinning != self.spinning {
            self.bar.set_style(if spinning {
                spinner_style()
            } else {
                bar_style()
            });
            self.spinning = spinning;
        }
        self.bar.set_length(total.max(1) as u64);
        self.bar.set_position(done.min(total) as u64);
        ControlFlow::Continue(())
    }
}

/// A bar over `total` units with a message; hidden when stderr is not a terminal or under
/// `--quiet`.
pub fn bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), target());
    bar.set_style(bar_style());
    bar.set_message(message.to_string());
    bar.enable_steady_tick(REDRAW_INTERVAL);
    bar
}

/// A spinner with a message, for work of unknown length; hidden as [`bar`] is.
pub fn spinner(message: &str) -> ProgressBar {
    let spinner = ProgressBar::with_draw_target(None, target());
    spinner.set_style(spinner_style());
    spinner.set_message(message.to_string());
    spinner.enable_steady_tick(REDRAW_INTERVAL);
    spinner
}

/// Prints the one-line summary a long command ends with on stderr, `what` followed by the wall
/// time since `start` (`scored 123,211 edges in 34.6 s`); nothing under `--quiet`.
pub fn summary(what: &str, start: Instant) {
    if !quiet() {
        eprintln!("{what} in {}", seconds(start.elapsed()));
    }
}

/// A duration for people: `0.42 s`, `34.6 s`, `11 min 5 s`.
pub fn seconds(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2} s")
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = secs.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// A count with thousands separators: `123,211`.
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` things, in the plural unless one: `1 edge`, `262 edges`, `123,211 edges`.
pub fn items(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{} {thing}s", count(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(262), "262");
        assert_eq!(count(32_491), "32,491");
        assert_eq!(count(123_211), "123,211");
        assert_eq!(count(1_592_881), "1,592,881");
        assert_eq!(items(1, "edge"), "1 edge");
        assert_eq!(items(32_491, "edge"), "32,491 edges");
        assert_eq!(seconds(Duration::from_millis(420)), "0.42 s");
        assert_eq!(seconds(Duration::from_millis(34_600)), "34.6 s");
        assert_eq!(seconds(Duration::from_secs(665)), "11 min 5 s");
    }

    #[test]
    fn a_bar_follows_stages_with_and_without_counts() {
        let mut bar = Bar::new("loading");
        assert!(bar.tick("cti", 0, 0).is_continue());
        assert!(bar.spinning);
        assert!(bar.tick("cci", 1, 3).is_continue());
        assert!(!bar.spinning);
        assert_eq!(bar.bar.position(), 1);
        assert_eq!(bar.bar.length(), Some(3));
        bar.finish();
    }
}
