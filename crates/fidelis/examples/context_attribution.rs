//! PECoRe (Sarti et al., ICLR 2024) on the organism: which generated tokens used the context
//! (CTI), and which context tokens they used (CCI).
//!
//! `cargo run -p fidelis --example context_attribution` (from the repository root).

use fidelis::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = fidelis::cpu();
    let model = Model::load(
        &fidelis::models::fetch::resolve_model_name("organism")?,
        &device,
    )?;
    let mut cfg = PecoreConfig::new(
        "The coin is blue. The key is in the red box. The cup is old.",
        "Question: Where is the key? Answer:",
    );
    cfg.input_template = "Context: {context} {current}".into();
    cfg.max_new_tokens = 4;
    cfg.cti_std = Some(0.0);
    let result = attribute_context(&model, &cfg)?;
    println!("answer: {:?}", result.output_current);
    for (token, score) in result.output_current_tokens.iter().zip(&result.cti_scores) {
        let mark = if *score > result.cti_threshold {
            "  <- context-sensitive"
        } else {
            ""
        };
        println!("  {token:<12} CTI {score:+.3}{mark}");
    }
    for cci in &result.cci_scores {
        println!(
            "{:?} (without context: {:?}) uses the context",
            cci.cti_token, cci.contrast_token
        );
    }
    Ok(())
}
