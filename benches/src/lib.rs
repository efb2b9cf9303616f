//! Criterion benchmarks of Fidelis.
