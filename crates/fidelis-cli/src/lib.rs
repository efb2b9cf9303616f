//! # fidelis-cli
//!
//! The `fidelis` command-line tool, plus the small pieces binaries share: choosing a Burn device
//! from a `--device` string and drawing progress bars. This is the one crate (with xtask,
//! benches and tests) that names concrete backends.

pub mod device;
pub mod progress;
