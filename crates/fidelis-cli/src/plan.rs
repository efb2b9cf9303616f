//! `fidelis inspect --plan`: the estimate of [`fidelis_attribution::plan`] as a table with
//! human units and a one-line verdict, or as JSON.

use anyhow::Result;
use bytesize::ByteSize;
use fidelis_attribution::plan::{Plan, estimate};
use fidelis_models::TransformerConfig;

use crate::options::PlanOptions;

/// Device memory sizes the verdict tries, in GiB: common GPUs from 8 GiB consumer cards to
/// 192 GiB accelerators.
pub const GPU_SIZES_GIB: &[u64] = &[8, 12, 16, 24, 32, 40, 48, 80, 94, 141, 192];

/// Share of a device's memory the verdict lets a run fill: the rest is for the driver's
/// context and the allocator's pools, which the plan does not count.
pub const USABLE_SHARE: f64 = 0.9;

/// The plan of `opts` on a model of config `cfg`.
pub fn plan(cfg: &TransformerConfig, opts: &PlanOptions) -> Result<Plan> {
    Ok(estimate(cfg, &opts.request()?)?)
}

/// One line: the smallest common device size that holds the peak with room to spare.
pub fn verdict(plan: &Plan) -> String {
    let gib = 1u64 << 30;
    let fits = GPU_SIZES_GIB
        .iter()
        .find(|&&size| plan.peak_bytes as f64 <= USABLE_SHARE * (size.saturating_mul(gib)) as f64);
    let peak = ByteSize::b(plan.peak_bytes).display().iec();
    match fits {
        Some(size) => format!(
            "needs ≈ {peak}: fits a GPU of {size} GiB ({}% of it kept for the driver and allocator)",
            ((1.0 - USABLE_SHARE) * 100.0).round()
        ),
        None => format!(
            "needs ≈ {peak}: more than a GPU of {} GiB holds; lower --batch-size or --tokens",
            GPU_SIZES_GIB.last().copied().unwrap_or(0)
        ),
    }
}

/// Prints `plan` of the model at `source` as a table, or as JSON.
pub fn print(source: &str, plan: &Plan, json: bool) -> Result<()> {
    if json {
        let mut value = serde_json::to_value(plan)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("source".into(), source.into());
            obj.insert("verdict".into(), verdict(plan).into());
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let r = &plan.request;
    let size = |b: u64| ByteSize::b(b).display().iec().to_string();
    println!("model         {source}");
    println!(
        "run           {} · pairs {} in batches of {} · {} tokens{} · {} bytes per element",
        r.method,
        r.pairs,
        r.batch_size,
        r.tokens,
        match r.method.gradient() {
            Some(m) if m.name().starts_with("eap-ig") => format!(
                " · {} steps ({} per pass{})",
                r.steps,
                r.steps_per_pass,
                if r.workers > 1 {
                    format!(", {} workers", r.workers)
                } else {
                    String::new()
                }
            ),
            None => format!(" · {} edges per pass", r.edges_per_pass),
            _ => String::new(),
        },
        r.bytes_per_element
    );
    println!(
        "graph         {} writers × {} reader inputs · {} edges",
        plan.n_forward, plan.n_backward, plan.n_edges
    );
    println!(
        "passes        {} forward · {} backward",
        plan.forward_passes, plan.backward_passes
    );
    println!(
        "peak memory   {} (during the {})",
        size(plan.peak_bytes),
        plan.peak_phase
    );
    let width = plan
        .breakdown
        .iter()
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(0);
    for t in &plan.breakdown {
        println!("  {:<width$}  {:>10}  {}", t.name, size(t.bytes), t.detail);
    }
    println!("verdict       {}", verdict(plan));
    Ok(())
}
