//! SVG plots: faithfulness against circuit size.

use std::fmt::Write as _;

use fidelis_faithfulness::Curve;

/// Faithfulness vs edge fraction (log x axis), one line per method. A label `METHOD/RULE` is
/// drawn in METHOD's colour with a dashed line, so variants of one method read as a family.
pub fn faithfulness_plot(lines: &[(&str, &Curve)], title: &str) -> String {
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let (w, h, left, right, top, bottom) = (640.0, 420.0, 60.0, 170.0, 40.0, 50.0);
    let points = lines.iter().flat_map(|(_, c)| c.points.iter());
    let (lo_f, hi_f) = points.clone().fold((1.0f64, 1.0f64), |(a, b), p| {
        (a.min(p.fraction), b.max(p.fraction))
    });
    let (y0, y1) = points.fold((0.0f32, 1.1f32), |(a, b), p| {
        (a.min(p.faithfulness), b.max(p.faithfulness))
    });
    let (x_lo, x_hi) = (
        lo_f.max(1e-6).log10().floor(),
        hi_f.log10().ceil().max(lo_f.log10() + 1.0),
    );
    let x = |f: f64| left + (f.max(1e-6).log10() - x_lo) / (x_hi - x_lo) * (w - left - right);
    let y = |v: f32| top + f64::from((y1 - v) / (y1 - y0)) * (h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"24\" font-size=\"14\">Faithfulness vs circuit size: {title}</text>\n"
    );
    let (x_end, y_end) = (w - right, h - bottom);
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{y_end}\" x2=\"{x_end}\" y2=\"{y_end}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{y_end}\" stroke=\"black\"/>"
    );
    let mut e = x_lo;
    while e <= x_hi + 1e-9 {
        let xe = x(10f64.powf(e));
        let _ = writeln!(
            s,
            "<line x1=\"{xe:.1}\" y1=\"{y_end}\" x2=\"{xe:.1}\" y2=\"{:.1}\" stroke=\"black\"/><text x=\"{xe:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}%</text>",
            y_end + 5.0,
            y_end + 18.0,
            100.0 * 10f64.powf(e)
        );
        e += 1.0;
    }
    // Ticks over the whole range: signed-selection curves can go well above 1.
    let step = if y1 - y0 <= 1.5 {
        0.2
    } else if y1 - y0 <= 4.0 {
        0.5
    } else {
        1.0
    };
    let first = (y0 / step).ceil() as i32;
    let last = (y1 / step).floor() as i32;
    for v in (first..=last).map(|k| k as f32 * step) {
        let yv = y(v);
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{yv:.1}\" x2=\"{x_end}\" y2=\"{yv:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            left - 6.0,
            yv + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">edges in circuit (fraction of all, log scale)</text>",
        (left + x_end) / 2.0,
        h - 12.0
    );
    let mut bases: Vec<&str> = Vec::new();
    for (i, (name, curve)) in lines.iter().enumerate() {
        let (base, variant) = name.split_once('/').unwrap_or((name, ""));
        let k = bases.iter().position(|b| *b == base).unwrap_or_else(|| {
            bases.push(base);
            bases.len() - 1
        });
        let color = COLORS[k % COLORS.len()];
        let dash = match variant {
            "" => String::new(),
            "signed" => " stroke-dasharray=\"6 3\"".to_string(),
            _ => " stroke-dasharray=\"2 3\"".to_string(),
        };
        let pts: Vec<String> = curve
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.fraction), y(p.faithfulness)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            pts.join(" ")
        );
        let ly = top + 20.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x_end + 10.0,
            x_end + 30.0,
            x_end + 35.0,
            ly + 4.0,
            name
        );
    }
    s.push_str("</svg>\n");
    s
}
