//! The Rust code that `fidelis serve` exports for a context attribution, with every parameter
//! set. A unit test in `src/serve/context_job.rs` checks that the exporter writes exactly
//! `serve_context_snippet.rs.txt`, and `cargo test` compiles it here, so the exported code
//! builds against the crates' API. (It sets a chat template, so it runs only on a model that
//! has one, such as `smollm2`.)

include!("serve_context_snippet.rs.txt");
