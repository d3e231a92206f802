//! `inceptionxml plot`: the training curves of one or several runs — P@1, PSP@1 (test split
//! solid, validation split dashed) and training loss per epoch — as one PNG, read from each run's
//! `metrics.jsonl`. `train` draws `curves.png` into the model directory at the end of a run.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, bail, Context};
use plotters::prelude::*;
use serde_json::Value;

use crate::common::outln;

/// Flags of `inceptionxml plot`.
#[derive(clap::Args)]
pub struct Args {
    /// A run's metrics.jsonl, or a model directory holding one; repeat for several runs.
    #[arg(long, required = true)]
    pub metrics: Vec<PathBuf>,
    /// PNG file to write (replaced whole: a failed plot leaves an earlier file as it was).
    #[arg(long)]
    pub out: PathBuf,
    /// Image width in pixels (200..=8000).
    #[arg(long, default_value_t = 1500)]
    pub width: u32,
    /// Image height in pixels (150..=8000).
    #[arg(long, default_value_t = 500)]
    pub height: u32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runs = args
        .metrics
        .iter()
        .map(|p| read_run(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    draw(&runs, &args.out, (args.width, args.height))?;
    outln!("wrote {}", args.out.display())?;
    Ok(())
}

/// One epoch's line of `metrics.jsonl` (metrics ×100; absent where the epoch was not evaluated).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub epoch: u32,
    pub loss: Option<f64>,
    pub test_p1: Option<f64>,
    pub test_psp1: Option<f64>,
    pub valid_p1: Option<f64>,
    pub valid_psp1: Option<f64>,
}

/// A run's curves, named after its model directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    pub points: Vec<Point>,
}

/// The largest magnitude of a plotted value: far beyond any percentage or loss a run records.
const MAX_VALUE: f64 = 1e9;

/// Reads `path` (a `metrics.jsonl`, or a model directory holding one). A line that is not a
/// JSON object with a positive `epoch` is an error naming the file and line.
pub fn read_run(path: &Path) -> anyhow::Result<Run> {
    let file = if path.is_dir() {
        path.join(inceptionxml::model_dir::METRICS)
    } else {
        path.to_path_buf()
    };
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let name = dir
        .and_then(|d| d.canonicalize().ok())
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| file.display().to_string());
    // The library's line reader: a line is capped (xmc::io::MAX_LINE), not read without bound.
    let mut lines = xmc::io::lines(&file)?;
    let mut points = Vec::new();
    let mut i = 0;
    while let Some(line) = lines.next_line()? {
        i += 1;
        let at = || format!("{}:{}", file.display(), i);
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).with_context(at)?;
        let epoch = v
            .get("epoch")
            .and_then(Value::as_u64)
            .filter(|&e| e > 0 && e <= u32::MAX as u64)
            .ok_or_else(|| anyhow!("{}: no positive \"epoch\"", at()))?;
        let metric = |split: &str, key: &str| v.get(split)?.get(key)?.as_f64();
        let point = Point {
            epoch: epoch as u32,
            loss: v.get("loss").and_then(Value::as_f64),
            test_p1: metric("metrics", "P@1"),
            test_psp1: metric("metrics", "PSP@1"),
            valid_p1: metric("valid", "P@1"),
            valid_psp1: metric("valid", "PSP@1"),
        };
        // Metrics are percentages and a training loss above `MAX_LOSS` stops training: a value
        // far outside would make an axis range that overflows (the drawing never ended).
        let values = [
            point.loss,
            point.test_p1,
            point.test_psp1,
            point.valid_p1,
            point.valid_psp1,
        ];
        if let Some(x) = values.into_iter().flatten().find(|x| x.abs() > MAX_VALUE) {
            bail!(
                "{}: value {x} is out of range (at most {MAX_VALUE:e} in magnitude)",
                at()
            );
        }
        points.push(point);
    }
    if points.is_empty() {
        bail!("{}: no epochs recorded", file.display());
    }
    Ok(Run { name, points })
}

/// The bundled font (DejaVu Sans, Bitstream Vera licence: `assets/DejaVuSans-LICENSE.txt`),
/// so that a plot needs no system fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the bundled font does not load"));
    });
    res
}

/// One panel: a title and which value of a point it draws (test, validation).
struct Panel {
    title: &'static str,
    test: fn(&Point) -> Option<f64>,
    valid: Option<fn(&Point) -> Option<f64>>,
}

const PANELS: [Panel; 3] = [
    Panel {
        title: "P@1 (%)",
        test: |p| p.test_p1,
        valid: Some(|p| p.valid_p1),
    },
    Panel {
        title: "PSP@1 (%)",
        test: |p| p.test_psp1,
        valid: Some(|p| p.valid_psp1),
    },
    Panel {
        title: "training loss",
        test: |p| p.loss,
        valid: None,
    },
];

/// Draws `runs` side by side in three panels into the PNG `out` (written beside and renamed).
pub fn draw(runs: &[Run], out: &Path, (width, height): (u32, u32)) -> anyhow::Result<()> {
    if !(200..=8000).contains(&width) || !(150..=8000).contains(&height) {
        bail!("image size {width}×{height}: width must be 200..=8000 and height 150..=8000");
    }
    if runs.is_empty() {
        bail!("no runs to plot");
    }
    register_font()?;
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let panels = root.split_evenly((1, PANELS.len()));
        for (area, panel) in panels.iter().zip(&PANELS) {
            draw_panel(area, panel, runs).map_err(|e| anyhow!("drawing {}: {e}", panel.title))?;
        }
        root.present().map_err(|e| anyhow!("drawing: {e}"))?;
    }
    write_png(out, &buf, (width, height))
}

type DrawResult<T> =
    Result<T, DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    runs: &[Run],
) -> DrawResult<()> {
    let values =
        |f: fn(&Point) -> Option<f64>| runs.iter().flat_map(move |r| r.points.iter().filter_map(f));
    let all: Vec<f64> = values(panel.test)
        .chain(panel.valid.into_iter().flat_map(values))
        .filter(|v| v.is_finite())
        .collect();
    let max_epoch = runs
        .iter()
        .flat_map(|r| r.points.iter().map(|p| p.epoch))
        .max()
        .unwrap_or(1)
        .max(2);
    let (lo, hi) = match (
        all.iter().copied().reduce(f64::min),
        all.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) => (lo, hi),
        _ => (0.0, 1.0),
    };
    // Metrics start at 0; the loss gets a margin around its own range.
    let (lo, hi) = if panel.valid.is_some() {
        (0.0, (hi * 1.08).max(1.0))
    } else {
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.01).max(1e-6);
        (lo - pad, hi + pad)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(52)
        .build_cartesian_2d(1u32..max_epoch, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series = |f: fn(&Point) -> Option<f64>| -> Vec<(u32, f64)> {
            run.points
                .iter()
                .filter_map(|p| f(p).filter(|v| v.is_finite()).map(|v| (p.epoch, v)))
                .collect()
        };
        let test = series(panel.test);
        let label = if panel.valid.is_some() {
            format!("{} (test)", run.name)
        } else {
            run.name.clone()
        };
        chart
            .draw_series(LineSeries::new(test.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(test.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        if let Some(valid) = panel.valid.map(series).filter(|v| !v.is_empty()) {
            chart
                .draw_series(DashedLineSeries::new(valid, 6, 4, color.stroke_width(2)))?
                .label(format!("{} (validation)", run.name))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 6, y)], color.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(if panel.valid.is_some() {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .draw()?;
    Ok(())
}

/// Encodes the RGB buffer as PNG into `out` ([`xmc::io::write_atomic`]: written beside, renamed
/// into place; an earlier file stays whole on failure).
fn write_png(out: &Path, rgb: &[u8], (width, height): (u32, u32)) -> anyhow::Result<()> {
    xmc::io::write_atomic(out, |w| {
        let mut enc = png::Encoder::new(w, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(std::io::Error::other)?;
        w.write_image_data(rgb).map_err(std::io::Error::other)?;
        w.finish().map_err(std::io::Error::other)
    })
    .with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_run(dir: &Path, lines: &[&str]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join("metrics.jsonl");
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    #[test]
    fn reads_test_and_validation_points_and_names_the_run() {
        let d = tempfile::tempdir().unwrap();
        let p = write_run(
            &d.path().join("yso_plus"),
            &[
                r#"{"epoch":1,"loss":0.5,"metrics":null}"#,
                r#"{"epoch":2,"loss":0.25,"metrics":{"P@1":20.5,"PSP@1":10.0},"valid":{"P@1":21.0,"PSP@1":11.0}}"#,
            ],
        );
        let run = read_run(d.path().join("yso_plus").as_path()).unwrap();
        assert_eq!(run, read_run(&p).unwrap());
        assert_eq!(run.name, "yso_plus");
        assert_eq!(run.points.len(), 2);
        assert_eq!(run.points[0].test_p1, None);
        assert_eq!(run.points[1].test_p1, Some(20.5));
        assert_eq!(run.points[1].valid_psp1, Some(11.0));
        assert_eq!(run.points[1].loss, Some(0.25));
    }

    /// Issue 27 D5: a value near f64's largest (here 1.7e308 and −1e308) spun `plot` at 100 %
    /// CPU forever; it is refused, naming the file and line.
    #[test]
    fn absurd_values_are_refused_not_plotted_forever() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("metrics.jsonl");
        for bad in [
            r#"{"epoch":2,"loss":0.5,"metrics":{"P@1":1.7e308}}"#,
            r#"{"epoch":2,"loss":-1e308}"#,
        ] {
            std::fs::write(&f, format!("{{\"epoch\":1,\"loss\":0.6}}\n{bad}\n")).unwrap();
            let e = read_run(&f).unwrap_err().to_string();
            assert!(
                e.contains("metrics.jsonl:2: value") && e.contains("out of range"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write_run(d.path(), &[r#"{"epoch":1}"#, "{not json"]);
        let e = format!("{:#}", read_run(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:2"), "{e}");
        let p = write_run(d.path(), &[r#"{"epoch":0}"#]);
        let e = format!("{:#}", read_run(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:1") && e.contains("epoch"), "{e}");
        let p = write_run(d.path(), &[""]);
        assert!(format!("{:#}", read_run(&p).unwrap_err()).contains("no epochs"));
    }

    #[test]
    fn draws_a_png_of_the_requested_size_with_the_curves_in_each_run_colour() {
        let d = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (1..=6)
            .map(|e| {
                format!(
                    r#"{{"epoch":{e},"loss":{},"metrics":{{"P@1":{},"PSP@1":{}}},"valid":{{"P@1":{},"PSP@1":5}}}}"#,
                    1.0 / e as f64,
                    5.0 * e as f64,
                    2.0 * e as f64,
                    4.0 * e as f64
                )
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let a = read_run(&write_run(&d.path().join("a"), &refs)).unwrap();
        let b = read_run(&write_run(&d.path().join("b"), &refs[..3])).unwrap();
        let out = d.path().join("curves.png");
        draw(&[a, b], &out, (900, 300)).unwrap();
        let dec = png::Decoder::new(std::fs::File::open(&out).unwrap());
        let mut reader = dec.read_info().unwrap();
        let mut px = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut px).unwrap();
        assert_eq!((info.width, info.height), (900, 300));
        // Both runs' colours appear (the curves are drawn), and only there is non-grey ink.
        for i in 0..2 {
            let c = Palette99::pick(i).to_rgba();
            let n = px
                .chunks(3)
                .filter(|p| (p[0], p[1], p[2]) == (c.0, c.1, c.2))
                .count();
            assert!(n > 100, "run {i}: {n} pixels of its colour");
        }
        // No temporary file is left beside the plot.
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn refuses_unreasonable_sizes_and_keeps_an_existing_plot() {
        let d = tempfile::tempdir().unwrap();
        let run = read_run(&write_run(d.path(), &[r#"{"epoch":1,"loss":1}"#])).unwrap();
        let out = d.path().join("c.png");
        std::fs::write(&out, b"old").unwrap();
        assert!(draw(std::slice::from_ref(&run), &out, (100_000, 300)).is_err());
        assert!(draw(&[run], &d.path().join("missing/c.png"), (400, 300)).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
    }
}
