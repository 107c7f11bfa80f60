//! The study's plots (plotters; SVG and PNG): Figure 2 (each Bonnie metric and
//! the fio-style ones relative to native, a bar per file size, `*` where
//! significant) and throughput against ring order (relative to native).
//!
//! Text is drawn with ab_glyph from a TrueType file read at run time (no
//! fontconfig): `--font`, else DejaVu Sans where Debian's fonts-dejavu-core
//! puts it.

use crate::study::compare::{compare, sweep_points};
use crate::study::types::{Knob, Metric, StudyResults, figure2_metrics, fio_metrics};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Register the font once for the process; an error says why there is none.
fn font(path: Option<&Path>) -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let candidates: Vec<&Path> = match path {
            Some(p) => vec![p],
            None => FONT_PATHS.iter().map(Path::new).collect(),
        };
        let Some((p, bytes)) = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (*p, b)))
        else {
            return Err(format!(
                "no TrueType font for the plots' text (looked at {}); install fonts-dejavu-core or pass --font",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a TrueType font", p.display()))
    })
    .clone()
}

type PlotResult<T> = Result<T, Box<dyn std::error::Error>>;

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Grouped bars: one group per metric, one bar per size.
fn relative_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &StudyResults,
    ms: &[Metric],
    title: &str,
) -> PlotResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let k = r.sizes.len().max(1);
    let mut ymax: f64 = 1.2;
    for si in 0..r.sizes.len() {
        for &m in ms {
            if let Some(c) = compare(r, si, 1, 0, m) {
                // Headroom: the legend sits in the upper right, above the bars.
                ymax = ymax.max(c.ratio * 1.3);
            }
        }
    }
    let n = ms.len() as f64;
    let (plot, labels) = root.split_vertically(root.dim_in_pixel().1 as i32 - 50);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(5)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("xenio / native")
        .label_style(("sans-serif", 14))
        .draw()?;
    let width = 0.8 / k as f64;
    for si in 0..r.sizes.len() {
        let color = PALETTE[si % PALETTE.len()];
        let mut bars = Vec::new();
        let mut marks = Vec::new();
        for (mi, &m) in ms.iter().enumerate() {
            let Some(c) = compare(r, si, 1, 0, m) else {
                continue;
            };
            let x0 = mi as f64 + 0.1 + si as f64 * width;
            bars.push(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, c.ratio)],
                color.filled(),
            ));
            if c.significant() {
                marks.push(Text::new(
                    "*",
                    (x0 + width * 0.3, c.ratio + ymax * 0.01),
                    ("sans-serif", 18).into_font().color(&BLACK),
                ));
            }
        }
        chart
            .draw_series(bars)?
            .label(format!("{} MiB", r.sizes[si] >> 20))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(marks)?;
    }
    chart.draw_series(LineSeries::new(
        vec![(0.0, 1.0), (n, 1.0)],
        BLACK.stroke_width(1),
    ))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    // Metric names under their groups.
    let (px0, _) = plot.get_base_pixel();
    for (mi, m) in ms.iter().enumerate() {
        let (x, _) = chart.backend_coord(&(mi as f64 + 0.5, 0.0));
        labels.draw(&Text::new(
            m.name().to_string(),
            (x - px0 - (m.name().len() as i32 * 7 / 2), 8),
            ("sans-serif", 14),
        ))?;
    }
    labels.draw(&Text::new(
        "* significant at 95% (Welch's t-test); total time: lower is better",
        (70, 30),
        ("sans-serif", 12),
    ))?;
    root.present()?;
    Ok(())
}

/// xenio/native against ring order, one line per sweep workload.
fn ring_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: &StudyResults,
) -> PlotResult<bool>
where
    DB::ErrorType: 'static,
{
    let Some(ssi) = r.plan.sweep_size else {
        return Ok(false);
    };
    let pts = sweep_points(r, Knob::RingOrder);
    if pts.len() < 2 {
        return Ok(false);
    }
    let orders: Vec<(f64, usize)> = pts
        .iter()
        .filter_map(|(label, ci)| {
            label
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
                .map(|o| (o, *ci))
        })
        .collect();
    let Some(&(_, first)) = orders.iter().find(|(_, ci)| *ci != 1) else {
        return Ok(false);
    };
    let ms: Vec<Metric> = r.configs[first]
        .phases
        .iter()
        .map(|&p| Metric::Phase(p))
        .collect();
    let mut ymax: f64 = 1.2;
    let mut series = Vec::new();
    for &m in &ms {
        let line: Vec<(f64, f64)> = orders
            .iter()
            .filter_map(|&(o, ci)| compare(r, ssi, ci, 0, m).map(|c| (o, c.ratio)))
            .collect();
        for &(_, y) in &line {
            ymax = ymax.max(y * 1.1);
        }
        series.push((m, line));
    }
    root.fill(&WHITE)?;
    let xmax = orders.iter().map(|o| o.0).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "xenio throughput against ring page order ({} MiB, relative to native)",
                r.sizes[ssi] >> 20
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.2f64..xmax + 0.2, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_labels(orders.len())
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .x_desc("ring page order (32 << order slots)")
        .y_desc("xenio / native")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (m, line)) in series.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(m.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart.draw_series(LineSeries::new(
        vec![(-0.2, 1.0), (xmax + 0.2, 1.0)],
        BLACK.stroke_width(1),
    ))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(true)
}

/// Write the plots into `dir`; returns the file names written.
pub fn plots(
    r: &StudyResults,
    dir: &Path,
    font_path: Option<&Path>,
) -> Result<Vec<&'static str>, String> {
    font(font_path)?;
    let mut written = Vec::new();
    let fig2 = figure2_metrics()
        .into_iter()
        .filter(|m| r.samples.keys().any(|(_, c, x)| *c == 1 && x == m))
        .collect::<Vec<_>>();
    let fio = fio_metrics()
        .into_iter()
        .filter(|m| r.samples.keys().any(|(_, c, x)| *c == 1 && x == m))
        .collect::<Vec<_>>();
    let err = |what: &str, e: Box<dyn std::error::Error>| format!("{what}: {e}");
    let size = (1000, 520);
    for (ms, stem, title, svg, png) in [
        (
            &fig2,
            "relative",
            "Bonnie: xenio relative to native (Figure 2)",
            "relative.svg",
            "relative.png",
        ),
        (
            &fio,
            "fio",
            "fio-style workloads: xenio relative to native",
            "fio.svg",
            "fio.png",
        ),
    ] {
        if ms.is_empty() {
            continue;
        }
        let p = dir.join(svg);
        relative_bars(&SVGBackend::new(&p, size).into_drawing_area(), r, ms, title)
            .map_err(|e| err(stem, e))?;
        let p = dir.join(png);
        relative_bars(
            &BitMapBackend::new(&p, size).into_drawing_area(),
            r,
            ms,
            title,
        )
        .map_err(|e| err(stem, e))?;
        written.push(svg);
        written.push(png);
    }
    let p = dir.join("ring-order.svg");
    if ring_lines(&SVGBackend::new(&p, (900, 520)).into_drawing_area(), r)
        .map_err(|e| err("ring-order", e))?
    {
        let p = dir.join("ring-order.png");
        ring_lines(&BitMapBackend::new(&p, (900, 520)).into_drawing_area(), r)
            .map_err(|e| err("ring-order", e))?;
        written.push("ring-order.svg");
        written.push("ring-order.png");
    } else {
        let _ = std::fs::remove_file(&p);
    }
    Ok(written)
}
