//! SVG plots with plotters' SVG backend only. Text goes into the SVG as `<text>` elements and
//! plotters estimates its size itself, so no font library or system font is needed.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::fmt_num;

/// Colours for the series, in order (the first target, the second, ...).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The percentile axis counts nines: 0 = 0 %, 1 = 90 %, 2 = 99 %, 3 = 99.9 % ...
const MAX_NINES: f64 = 6.0;

fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        return MAX_NINES;
    }
    (-(1.0 - percentile / 100.0).log10()).clamp(0.0, MAX_NINES)
}

fn nines_label(x: &f64) -> String {
    let n = x.round();
    if (x - n).abs() > 1e-6 {
        return String::new();
    }
    match n as i64 {
        0 => "0%".into(),
        1 => "90%".into(),
        k if (k as f64) >= MAX_NINES => "max".into(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)).replace("99.%", "99%"),
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e:?}")
}

/// A latency percentile curve: one line per series of (percentile, µs) points, log-scale
/// latency against "nines" of percentile, so the tail gets the room it deserves.
/// One line of a latency plot.
pub struct Curve {
    pub name: String,
    /// (percentile, µs) points.
    pub points: Vec<(f64, f64)>,
    /// Index into the palette: one colour per target.
    pub color: usize,
    /// Drawn lighter and thinner (the from-actual-send companion of a curve).
    pub light: bool,
}

pub fn latency_curves(path: &Path, title: &str, series: &[Curve]) -> Result<()> {
    let points: Vec<&(f64, f64)> = series.iter().flat_map(|c| c.points.iter()).collect();
    if points.is_empty() {
        return Ok(());
    }
    let ymin = points
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .max(0.1)
        * 0.8;
    let ymax = points
        .iter()
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(ymin * 2.0)
        * 1.25;
    let xmax = points
        .iter()
        .map(|p| nines(p.0))
        .fold(4.0f64, f64::max)
        .ceil();

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..xmax, (ymin..ymax).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&nines_label)
        .y_label_formatter(&|v| fmt_num(*v))
        .draw()
        .map_err(plot_err)?;
    for c in series {
        let base = PALETTE[c.color % PALETTE.len()];
        let style = if c.light {
            base.mix(0.45).stroke_width(1)
        } else {
            base.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(
                c.points.iter().map(|(p, us)| (nines(*p), us.max(ymin))),
                style,
            ))
            .map_err(plot_err)?
            .label(c.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Grouped bars: one group per category, one bar per series, each bar labelled with its value.
pub fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    if categories.is_empty() || series.is_empty() {
        return Ok(());
    }
    let n = categories.len();
    let k = series.len();
    // NaN marks a value the target does not have (unsupported, failed): no bar, "n/a".
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().cloned())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.3;
    let width = (240 + n * k * 70).clamp(640, 1600) as u32;

    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..n as f64, 0.0..ymax)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .y_label_formatter(&|v| fmt_num(*v))
        .draw()
        .map_err(plot_err)?;
    let bar_w = 0.8 / k as f64;
    for (j, (name, values)) in series.iter().enumerate() {
        let color = PALETTE[j % PALETTE.len()];
        let rects = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(move |(i, v)| {
                let x0 = i as f64 + 0.1 + j as f64 * bar_w;
                Rectangle::new([(x0, 0.0), (x0 + bar_w * 0.92, *v)], color.filled())
            });
        chart
            .draw_series(rects)
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let value_style = TextStyle::from(("sans-serif", 12).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let x = i as f64 + 0.1 + (j as f64 + 0.46) * bar_w;
                let (text, y) = if v.is_finite() {
                    (fmt_num(*v), *v)
                } else {
                    ("n/a".to_string(), 0.0)
                };
                Text::new(text, (x, y), value_style.clone())
            }))
            .map_err(plot_err)?;
    }
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, c) in categories.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(c.clone(), (px, py + 8), label_style.clone()))
            .map_err(plot_err)?;
    }
    if k > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&3.0), "99.9%");
        assert_eq!(nines_label(&4.0), "99.99%");
        assert_eq!(nines_label(&6.0), "max");
        assert_eq!(nines_label(&2.5), "");
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
    }

    #[test]
    fn plots_are_written_as_svg() {
        let dir = std::env::temp_dir().join(format!("arqonbus-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let curve = dir.join("curve.svg");
        let c = Curve {
            name: "a".into(),
            points: vec![(50.0, 10.0), (99.0, 20.0), (100.0, 90.0)],
            color: 0,
            light: false,
        };
        latency_curves(&curve, "t", &[c]).unwrap();
        let svg = std::fs::read_to_string(&curve).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("99%"));
        let bar = dir.join("bars.svg");
        bars(
            &bar,
            "t",
            "msgs/s",
            &["x".into(), "y".into()],
            &[
                ("a".into(), vec![1.0, 2.0]),
                ("b".into(), vec![3.0, f64::NAN]),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&bar).unwrap();
        assert!(svg.contains("<rect") && svg.contains("n/a"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
