//! PNG line plots of training curves (drawn with ikol-render's lines and 5x7 label font).
//!
//! `plot_runs` draws two panels from one or more run directories: the training loss per step
//! (log10 scale, smoothed by a running mean) on the left and the evaluation MPJPE (mm) on the
//! right; run `i` uses colour `PALETTE[i]` (blue, orange, green, red, purple, brown, pink, grey,
//! olive, cyan: matplotlib's tab10). The axes carry the numeric ranges only (the built-in font has few
//! letters). `plot_bars` draws grouped bars (MPJPE, PA-MPJPE, PVE per run) in the same colours.

use std::path::Path;

use anyhow::Context;
use ikol_render::{Frame, PixelFormat, draw_label, draw_line, write_png};

/// Colours of successive runs.
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Column `col` of a CSV with a header, as (step, value) rows (non-finite values dropped).
pub fn read_csv_column(path: &Path, col: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let c = header
        .iter()
        .position(|h| *h == col)
        .with_context(|| format!("{path:?} has no column {col}"))?;
    Ok(lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let x = f.first()?.parse::<f64>().ok()?;
            let y = f.get(c)?.parse::<f64>().ok()?;
            y.is_finite().then_some((x, y))
        })
        .collect())
}

fn running_mean(v: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let w = w.max(1);
    (0..v.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let s: f64 = v[lo..=i].iter().map(|p| p.1).sum();
            (v[i].0, s / (i + 1 - lo) as f64)
        })
        .collect()
}

struct Panel {
    x0: f32,
    y0: f32,
    w: f32,
    h: f32,
}

fn draw_panel(frame: &mut Frame<'_>, p: &Panel, series: &[Vec<(f64, f64)>], log_y: bool) {
    let tf = |y: f64| if log_y { y.max(1e-12).log10() } else { y };
    let pts = series.iter().flatten();
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(tf(y));
        ymax = ymax.max(tf(y));
    }
    let black = [0, 0, 0];
    draw_line(
        frame,
        [p.x0, p.y0 + p.h],
        [p.x0 + p.w, p.y0 + p.h],
        1.0,
        black,
    );
    draw_line(frame, [p.x0, p.y0], [p.x0, p.y0 + p.h], 1.0, black);
    if xmin > xmax {
        return;
    }
    if xmax - xmin < 1e-12 {
        xmax = xmin + 1.0;
    }
    if ymax - ymin < 1e-12 {
        ymax = ymin + 1.0;
    }
    let map = |x: f64, y: f64| {
        [
            p.x0 + ((x - xmin) / (xmax - xmin)) as f32 * p.w,
            p.y0 + p.h - ((tf(y) - ymin) / (ymax - ymin)) as f32 * p.h,
        ]
    };
    for (i, s) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        for w in s.windows(2) {
            draw_line(frame, map(w[0].0, w[0].1), map(w[1].0, w[1].1), 1.5, c);
        }
        if let [only] = s.as_slice() {
            let q = map(only.0, only.1);
            draw_line(frame, [q[0] - 2.0, q[1]], [q[0] + 2.0, q[1]], 3.0, c);
        }
    }
    let fmt = |y: f64| {
        let v = if log_y { 10f64.powf(y) } else { y };
        if v.abs() >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    };
    let white = Some([255, 255, 255]);
    let (x0, y0) = (p.x0 as i64, p.y0 as i64);
    draw_label(frame, x0 + 4, y0, &fmt(ymax), 1, black, white);
    draw_label(
        frame,
        x0 + 4,
        y0 + p.h as i64 - 10,
        &fmt(ymin),
        1,
        black,
        white,
    );
    draw_label(
        frame,
        x0 + p.w as i64 - 40,
        y0 + p.h as i64 + 4,
        &format!("{xmax:.0}"),
        1,
        black,
        white,
    );
}

/// Writes `out` (PNG): loss (log) and evaluation MPJPE of each run directory.
pub fn plot_runs(runs: &[&Path], out: &Path) -> anyhow::Result<()> {
    let (w, h) = (800usize, 320usize);
    let mut rgb = vec![255u8; w * h * 3];
    let mut loss = Vec::new();
    let mut eval = Vec::new();
    for r in runs {
        let l = read_csv_column(&r.join("metrics.csv"), "total")?;
        let win = (l.len() / 50).max(1);
        loss.push(running_mean(&l, win));
        eval.push(read_csv_column(&r.join("eval.csv"), "mpjpe_mm").unwrap_or_default());
    }
    {
        let mut frame = Frame::new(&mut rgb, w, h, 3 * w, PixelFormat::Rgb)?;
        let left = Panel {
            x0: 30.0,
            y0: 20.0,
            w: 340.0,
            h: 270.0,
        };
        let right = Panel { x0: 430.0, ..left };
        draw_panel(&mut frame, &left, &loss, true);
        draw_panel(&mut frame, &right, &eval, false);
        draw_label(&mut frame, 160, 4, "LOSS", 1, [0, 0, 0], None);
        draw_label(&mut frame, 560, 4, "TEST", 1, [0, 0, 0], None);
    }
    write_png(out, &rgb, w as u32, h as u32).with_context(|| format!("writing {out:?}"))?;
    Ok(())
}

/// Writes `out` (PNG): three panels (MPJPE, PA-MPJPE, PVE in mm), one bar per run in the run's
/// colour with its value above it and its number (1-based) below.
pub fn plot_bars(groups: &[[f64; 3]], out: &Path) -> anyhow::Result<()> {
    let (w, h) = (900usize, 320usize);
    let mut rgb = vec![255u8; w * h * 3];
    {
        let mut frame = Frame::new(&mut rgb, w, h, 3 * w, PixelFormat::Rgb)?;
        let black = [0, 0, 0];
        for (k, title) in ["MPJPE", "PA-MPJPE", "PVE"].iter().enumerate() {
            let x0 = 20.0 + 300.0 * k as f32;
            let (pw, ph, y0) = (270.0f32, 240.0f32, 40.0f32);
            let top = groups
                .iter()
                .map(|g| g[k])
                .filter(|v| v.is_finite())
                .fold(1e-9, f64::max);
            draw_line(&mut frame, [x0, y0 + ph], [x0 + pw, y0 + ph], 1.0, black);
            draw_label(&mut frame, x0 as i64 + 100, 8, title, 2, black, None);
            let slot = pw / groups.len().max(1) as f32;
            for (i, g) in groups.iter().enumerate() {
                let v = g[k];
                if !v.is_finite() {
                    continue;
                }
                let cx = x0 + slot * (i as f32 + 0.5);
                let bar = (v / top) as f32 * (ph - 14.0);
                draw_line(
                    &mut frame,
                    [cx, y0 + ph],
                    [cx, y0 + ph - bar],
                    slot * 0.7,
                    PALETTE[i % PALETTE.len()],
                );
                let label = format!("{v:.0}");
                let lx = cx as i64 - 3 * label.len() as i64;
                draw_label(
                    &mut frame,
                    lx,
                    (y0 + ph - bar) as i64 - 11,
                    &label,
                    1,
                    black,
                    None,
                );
                draw_label(
                    &mut frame,
                    cx as i64 - 3,
                    (y0 + ph) as i64 + 3,
                    &format!("{}", i + 1),
                    1,
                    black,
                    None,
                );
            }
        }
    }
    write_png(out, &rgb, w as u32, h as u32).with_context(|| format!("writing {out:?}"))?;
    Ok(())
}
