//! SVG plots of the evaluation report (plotters, SVG backend only).

use std::path::Path;

use plotters::prelude::*;

use crate::Error;

const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
];

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        problem: e.to_string(),
    }
}

/// A named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines with points; `log_y` plots y on a log scale.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<(), Error> {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0));
    let (mut x1, mut y0, mut y1) = (1e-9f64, f64::INFINITY, 1e-9f64);
    for p in pts {
        x1 = x1.max(p.0);
        y0 = y0.min(p.1);
        y1 = y1.max(p.1);
    }
    if !y0.is_finite() {
        y0 = 1e-3;
    }
    let root = SVGBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let draw = |series: &[Series], ch: &mut dyn FnMut(&Series, usize) -> Result<(), Error>| {
        for (i, s) in series.iter().enumerate() {
            ch(s, i)?;
        }
        Ok::<(), Error>(())
    };
    if log_y {
        let mut c = b
            .build_cartesian_2d(0.0..x1 * 1.05, ((y0 * 0.8).max(1e-3)..y1 * 1.5).log_scale())
            .map_err(|e| err(path, e))?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(path, e))?;
        draw(series, &mut |s, i| {
            let col = COLORS[i % COLORS.len()];
            let p: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite() && p.1 > 0.0)
                .collect();
            c.draw_series(LineSeries::new(p.clone(), col.stroke_width(2)))
                .map_err(|e| err(path, e))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col));
            c.draw_series(p.iter().map(|&q| Circle::new(q, 3, col.filled())))
                .map_err(|e| err(path, e))?;
            Ok(())
        })?;
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(path, e))?;
    } else {
        let mut c = b
            .build_cartesian_2d(0.0..x1 * 1.05, 0.0..y1 * 1.1)
            .map_err(|e| err(path, e))?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(path, e))?;
        draw(series, &mut |s, i| {
            let col = COLORS[i % COLORS.len()];
            let p: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            c.draw_series(LineSeries::new(p.clone(), col.stroke_width(2)))
                .map_err(|e| err(path, e))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col));
            c.draw_series(p.iter().map(|&q| Circle::new(q, 3, col.filled())))
                .map_err(|e| err(path, e))?;
            Ok(())
        })?;
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(path, e))?;
    }
    root.present().map_err(|e| err(path, e))?;
    Ok(())
}

/// Grouped bars: one group per category, one bar per series (values[series][category]).
pub fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    names: &[&str],
    values: &[Vec<f64>],
) -> Result<(), Error> {
    let y1 = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(1e-9f64, f64::max);
    let n = categories.len().max(1);
    let k = names.len().max(1);
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..y1 * 1.15)
        .map_err(|e| err(path, e))?;
    let cats = categories.to_vec();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&move |x| {
            let f = x.fract();
            if (f - 0.5).abs() < 0.01 {
                cats.get(*x as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(path, e))?;
    let w = 0.8 / k as f64;
    for (s, name) in names.iter().enumerate() {
        let col = COLORS[s % COLORS.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = (0..categories.len())
            .map(|i| {
                let v = values
                    .get(s)
                    .and_then(|r| r.get(i))
                    .copied()
                    .filter(|v| v.is_finite())
                    .unwrap_or(0.0);
                let x0 = i as f64 + 0.1 + w * s as f64;
                Rectangle::new([(x0, 0.0), (x0 + w * 0.95, v)], col.filled())
            })
            .collect();
        c.draw_series(rects)
            .map_err(|e| err(path, e))?
            .label(name.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))?;
    Ok(())
}
