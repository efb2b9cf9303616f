//! # fidelis-cli
//!
//! The `fidelis` command-line tool, plus the pieces binaries share: choosing a Burn device from a
//! `--device` string, drawing progress bars, writing outputs under `fidelis-out/`, and the circuit commands (`circuit discover`,
//! `circuit show`) as library functions so that xtask experiments and tests call the same code,
//! and the `fidelis serve` web page ([`serve`]).
//! This is the one crate (with xtask, benches and tests) that names concrete backends.

pub mod attribute;
pub mod circuit;
pub mod context;
pub mod dataset;
pub mod device;
pub mod inspect;
pub mod model_args;
pub mod options;
pub mod organism;
pub mod output;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod serve;

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
