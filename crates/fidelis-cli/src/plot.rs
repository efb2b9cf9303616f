//! Faithfulness curves drawn with `plotters` (SVG backend).
//!
//! The x axis is the circuit size as a share of all edges on a log scale, ticked at powers of
//! ten and labelled exactly (`0.1 %`, `1 %`, ...). The empty circuit has no place on a log axis:
//! it is drawn apart, left of a dashed break, at faithfulness 0 (its normalized faithfulness by
//! definition, `(m(∅) − m(∅)) / (m(full) − m(∅))`), and never joined to the measured points.
//! Markers sit only at measured sizes; the dashed grey line at 1 is the full model.

use anyhow::Result;
use fidelis_faithfulness::Curve;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// Line colours, one per method (a `METHOD/RULE` label shares its method's colour).
const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];
/// Canvas size in pixels.
const SIZE_PX: (u32, u32) = (760, 460);
/// Text size of tick labels and the legend, in pixels.
const LABEL_PX: u32 = 13;
/// Text size of the axis descriptions, in pixels.
const AXIS_PX: u32 = 14;
/// Text size of the title, in pixels.
const TITLE_PX: u32 = 16;
/// Grey of reference lines and the axis break.
const REFERENCE: RGBColor = RGBColor(0x99, 0x99, 0x99);
/// The x axis description.
pub const X_LABEL: &str = "circuit size (% of edges)";
/// The y axis description.
pub const Y_LABEL: &str = "normalized faithfulness";
/// The tick label of the empty circuit, drawn apart from the log axis.
pub const EMPTY_LABEL: &str = "empty";

/// The exact label of the tick at `10^exponent` (a fraction of edges) as a percentage:
/// `-4 → "0.01 %"`, `-2 → "1 %"`, `0 → "100 %"`; no float formatting, so no `0.00009999…`.
pub fn percent_tick(exponent: i32) -> String {
    let p = exponent + 2;
    if p >= 0 {
        format!("{} %", 10u64.pow(p as u32))
    } else {
        format!("0.{}1 %", "0".repeat((-p - 1) as usize))
    }
}

/// The x axis: `log10(fraction)` mapped linearly, ticked at the given exponents only (plotters'
/// own log axis ticks 2 and 5 within decades and formats them as floats).
struct DecadeAxis {
    /// The drawn range of `log10(fraction)`.
    range: std::ops::Range<f64>,
    /// Tick positions (integer exponents, and the empty circuit's place).
    ticks: Vec<f64>,
}

impl Ranged for DecadeAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let share = (value - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// The x range in decades `(lowest, highest)` of the measured fractions (fractions ≤ 0 left out).
fn decades(lines: &[(&str, &Curve)]) -> (i32, i32) {
    let measured = lines
        .iter()
        .flat_map(|(_, c)| c.points.iter())
        .map(|p| p.fraction)
        .filter(|f| *f > 0.0);
    let (lo, hi) = measured.fold((1.0f64, 1.0f64), |(a, b), f| (a.min(f), b.max(f)));
    let lo = lo.log10().floor() as i32;
    (lo.min(-1), (hi.log10().ceil() as i32).max(lo + 1))
}

/// Faithfulness vs edge fraction (log x axis), one line per label, with markers at the
/// measured sizes and the empty circuit apart. A label `METHOD/RULE` is drawn in METHOD's
/// colour with a dashed line, so variants of one method read as a family. `title` names what
/// was measured (model · task · method); the picture is a self-contained SVG document.
pub fn faithfulness_plot(lines: &[(&str, &Curve)], title: &str) -> Result<String> {
    let (lo, hi) = decades(lines);
    // The empty circuit sits one decade left of the lowest tick, past a break half-way.
    let (x_empty, x_break) = (f64::from(lo) - 1.0, f64::from(lo) - 0.5);
    let faith = lines
        .iter()
        .flat_map(|(_, c)| c.points.iter())
        .map(|p| f64::from(p.faithfulness))
        .filter(|v| v.is_finite());
    let (y_min, y_max) = faith.fold((0.0f64, 1.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let pad = 0.08 * (y_max - y_min);
    let ticks: Vec<f64> = std::iter::once(x_empty)
        .chain((lo..=hi).map(f64::from))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE_PX).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", TITLE_PX))
            .margin(16)
            .x_label_area_size(52)
            .y_label_area_size(64)
            .build_cartesian_2d(
                DecadeAxis {
                    range: (x_empty - 0.35)..(f64::from(hi) + 0.1),
                    ticks,
                },
                (y_min - pad)..(y_max + pad),
            )?;
        let x_tick = |x: &f64| {
            if *x < x_break {
                EMPTY_LABEL.to_string()
            } else {
                percent_tick(x.round() as i32)
            }
        };
        chart
            .configure_mesh()
            .x_desc(X_LABEL)
            .y_desc(Y_LABEL)
            .x_label_formatter(&x_tick)
            .y_label_formatter(&|v| format!("{:.1}", if v.abs() < 0.05 { 0.0 } else { *v }))
            .label_style(("sans-serif", LABEL_PX))
            .axis_desc_style(("sans-serif", AXIS_PX))
            .draw()?;
        let (y_lo, y_hi) = (y_min - pad, y_max + pad);
        chart.draw_series(DashedLineSeries::new(
            [(x_break, y_lo), (x_break, y_hi)],
            4,
            4,
            REFERENCE.stroke_width(1),
        ))?;
        chart.draw_series(DashedLineSeries::new(
            [(x_break, 1.0), (f64::from(hi) + 0.1, 1.0)],
            6,
            4,
            REFERENCE.stroke_width(1),
        ))?;
        draw_lines(&mut chart, lines, x_empty)?;
        chart
            .configure_series_labels()
            // Upper left holds only the empty circuit's column, whose marker sits at 0.
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", LABEL_PX))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// The chart type [`faithfulness_plot`] draws on.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<DecadeAxis, plotters::coord::types::RangedCoordf64>,
>;

/// Draws each curve: its line and markers at measured points, and its empty-circuit marker at
/// `x_empty` (hollow, not joined to the line).
fn draw_lines(chart: &mut Chart<'_, '_>, lines: &[(&str, &Curve)], x_empty: f64) -> Result<()> {
    let mut bases: Vec<&str> = Vec::new();
    for (name, curve) in lines {
        let (base, variant) = name.split_once('/').unwrap_or((name, ""));
        let k = bases.iter().position(|b| *b == base).unwrap_or_else(|| {
            bases.push(base);
            bases.len() - 1
        });
        let color = COLORS[k % COLORS.len()];
        let style = color.stroke_width(2);
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .filter(|p| p.fraction > 0.0 && p.faithfulness.is_finite())
            .map(|p| (p.fraction.log10(), f64::from(p.faithfulness)))
            .collect();
        let (dash, gap) = match variant {
            "" => (0, 0),
            "signed" => (6, 3),
            _ => (2, 3),
        };
        let series = if dash == 0 {
            chart.draw_series(LineSeries::new(points.clone(), style))?
        } else {
            chart.draw_series(DashedLineSeries::new(points.clone(), dash, gap, style))?
        };
        series.label(*name).legend(move |(x, y)| {
            let path = vec![(x, y), (x + 24, y)];
            if dash == 0 {
                // One dash longer than the path: a solid sample.
                DashedPathElement::new(path, 32, 1, style)
            } else {
                DashedPathElement::new(path, dash, gap, style)
            }
        });
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
        chart.draw_series(std::iter::once(Circle::new(
            (x_empty, 0.0),
            4,
            color.stroke_width(2),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use fidelis_faithfulness::CurvePoint;

    use super::*;

    /// A curve over `fractions` with faithfulness rising to 1.
    fn curve(fractions: &[f64]) -> Curve {
        let n = fractions.len() as f32;
        Curve {
            clean: 2.0,
            empty: 0.5,
            points: fractions
                .iter()
                .enumerate()
                .map(|(i, &fraction)| CurvePoint {
                    requested_edges: i + 1,
                    edges: i + 1,
                    fraction,
                    metric: 0.0,
                    faithfulness: (i + 1) as f32 / n,
                })
                .collect(),
            cpr: 0.0,
            cmd: 0.0,
        }
    }

    /// The text content of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    #[test]
    fn percent_ticks_are_exact() {
        let cases = [
            (-5, "0.001 %"),
            (-4, "0.01 %"),
            (-3, "0.1 %"),
            (-2, "1 %"),
            (-1, "10 %"),
            (0, "100 %"),
        ];
        for (exponent, label) in cases {
            assert_eq!(percent_tick(exponent), label);
        }
    }

    #[test]
    fn curve_has_axis_labels_ticks_legend_and_title() {
        let mib = curve(&[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        let signed = curve(&[0.0001, 0.01, 1.0]);
        let lines = [("EAP-IG", &mib), ("EAP-IG/signed", &signed)];
        let svg = faithfulness_plot(&lines, "gpt2 · ioi · EAP-IG").unwrap();
        if let Ok(path) = std::env::var("FIDELIS_PLOT_SAMPLE") {
            std::fs::write(path, &svg).unwrap();
        }
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        let texts = texts(&svg);
        for want in [
            X_LABEL,
            Y_LABEL,
            EMPTY_LABEL,
            "0.01 %",
            "0.1 %",
            "1 %",
            "10 %",
            "100 %",
            "EAP-IG",
            "EAP-IG/signed",
            "gpt2 · ioi · EAP-IG",
            "0.0",
        ] {
            assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
        }
        assert!(!texts.iter().any(|t| t == "-0.0"), "{texts:?}");
        // No float noise such as 0.00009999999999999999 in any label.
        for t in &texts {
            let decimals = t
                .split('.')
                .skip(1)
                .map(|s| s.chars().take_while(char::is_ascii_digit).count());
            assert!(decimals.clone().all(|d| d <= 3), "long number in {t:?}");
        }
        // Markers: one per measured point plus one empty-circuit marker per line.
        assert_eq!(svg.matches("<circle").count(), 10 + 3 + 2);
    }

    #[test]
    fn empty_circuit_is_not_joined_to_the_curve() {
        let c = curve(&[0.01, 0.1, 1.0]);
        let svg = faithfulness_plot(&[("EAP", &c)], "t").unwrap();
        // The line holds the three measured points only: no vertex at the empty position.
        let line = svg
            .split("<polyline")
            .skip(1)
            .find(|l| l.contains("#1F77B4") || l.contains("#1f77b4"))
            .expect("the curve's line");
        let points = line.split("points=\"").nth(1).unwrap();
        let points = &points[..points.find('"').unwrap()];
        assert_eq!(points.split_whitespace().count(), 3, "{points}");
    }
}
