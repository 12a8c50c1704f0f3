//! Throughput and p95 against batch size, the knee marked (PREBA Fig 6).

use std::path::Path;

use plotters::prelude::*;

use crate::ProfileError;
use crate::table::MeasuredEntry;

/// Writes an SVG with one panel per entry: throughput (left axis, blue) and
/// p95 latency (right axis, red) against batch size (log scale), the knee as
/// a dashed vertical line, circles on both curves and a "knee: batch B" label.
pub fn plot_svg(out: &Path, entries: &[MeasuredEntry]) -> Result<(), ProfileError> {
    let svg = render_svg(entries)?;
    std::fs::write(out, svg).map_err(|e| ProfileError::Io {
        what: out.display().to_string(),
        source: e,
    })
}

/// The SVG text of [`plot_svg`].
pub fn render_svg(entries: &[MeasuredEntry]) -> Result<String, ProfileError> {
    let perr = |e: &dyn std::fmt::Display| ProfileError::Other(format!("plot: {e}"));
    let mut svg = String::new();
    let n = entries.len().max(1);
    {
        let root = SVGBackend::with_string(&mut svg, (800, 420 * n as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| perr(&e))?;
        let panels = root.split_evenly((n, 1));
        for (e, area) in entries.iter().zip(panels.iter()) {
            let pts = &e.points;
            let xmin = f64::from(pts.iter().map(|p| p.batch).min().unwrap_or(1));
            let xmax = f64::from(pts.iter().map(|p| p.batch).max().unwrap_or(1));
            let tmax = pts.iter().map(|p| p.throughput).fold(0.0, f64::max) * 1.15;
            let lmax = pts.iter().map(|p| p.p95_ms).fold(0.0, f64::max) * 1.15;
            let caption = match e.bucket {
                Some(b) => format!("{} on {} (bucket {b})", e.model, e.slice),
                None => format!("{} on {}", e.model, e.slice),
            };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 20))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .right_y_label_area_size(70)
                .build_cartesian_2d(
                    ((xmin / 1.3)..(xmax * 1.3)).log_scale(),
                    0.0..tmax.max(1e-9),
                )
                .map_err(|e| perr(&e))?
                .set_secondary_coord(
                    ((xmin / 1.3)..(xmax * 1.3)).log_scale(),
                    0.0..lmax.max(1e-9),
                );
            chart
                .configure_mesh()
                .x_desc("batch size")
                .y_desc("throughput (requests/s)")
                .x_label_formatter(&|x| format!("{}", x.round()))
                .draw()
                .map_err(|e| perr(&e))?;
            chart
                .configure_secondary_axes()
                .y_desc("p95 latency (ms)")
                .draw()
                .map_err(|e| perr(&e))?;
            let thr: Vec<(f64, f64)> = pts
                .iter()
                .map(|p| (f64::from(p.batch), p.throughput))
                .collect();
            let p95: Vec<(f64, f64)> = pts.iter().map(|p| (f64::from(p.batch), p.p95_ms)).collect();
            chart
                .draw_series(LineSeries::new(thr.clone(), BLUE.stroke_width(2)))
                .map_err(|e| perr(&e))?
                .label("throughput")
                .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], BLUE.filled()));
            chart
                .draw_series(thr.iter().map(|&xy| Circle::new(xy, 3, BLUE.filled())))
                .map_err(|e| perr(&e))?;
            chart
                .draw_secondary_series(LineSeries::new(p95.clone(), RED.stroke_width(2)))
                .map_err(|e| perr(&e))?
                .label("p95 latency")
                .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], RED.filled()));
            chart
                .draw_secondary_series(p95.iter().map(|&xy| Circle::new(xy, 3, RED.filled())))
                .map_err(|e| perr(&e))?;
            // The knee: a dashed vertical line, rings on both curves, a label.
            let kx = f64::from(e.batch_knee);
            let kt = pts
                .iter()
                .find(|p| p.batch == e.batch_knee)
                .map_or(0.0, |p| p.throughput);
            let steps = 24;
            chart
                .draw_series((0..steps).step_by(2).map(|i| {
                    let y0 = tmax * f64::from(i) / f64::from(steps);
                    let y1 = tmax * f64::from(i + 1) / f64::from(steps);
                    PathElement::new(vec![(kx, y0), (kx, y1)], BLACK.stroke_width(1))
                }))
                .map_err(|e| perr(&e))?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (kx, kt),
                    7,
                    BLACK.stroke_width(2),
                )))
                .map_err(|e| perr(&e))?;
            chart
                .draw_secondary_series(std::iter::once(Circle::new(
                    (kx, e.time_knee_ms),
                    7,
                    BLACK.stroke_width(2),
                )))
                .map_err(|e| perr(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(
                        "knee: batch {}, Time_knee {:.2} ms",
                        e.batch_knee, e.time_knee_ms
                    ),
                    (kx, tmax * 0.95),
                    ("sans-serif", 14),
                )))
                .map_err(|e| perr(&e))?;
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| perr(&e))?;
        }
        root.present().map_err(|e| perr(&e))?;
    }
    Ok(svg)
}
