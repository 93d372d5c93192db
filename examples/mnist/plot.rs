//! The loss and accuracy curves as a PNG (plotters, with a bundled font so
//! no system font library is needed).

use std::path::Path;

use plotters::prelude::*;

/// One epoch's figures.
pub struct Point {
    pub epoch: u64,
    pub train_loss: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
}

pub fn draw(path: &Path, points: &[Point]) -> anyhow::Result<()> {
    static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
    // Registering twice (a second call in one process) is harmless to ignore.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let last = points.last().map_or(1, |p| p.epoch).max(1);

    let max_loss = points
        .iter()
        .map(|p| p.train_loss.max(p.test_loss))
        .fold(0.0, f64::max)
        * 1.1;
    let mut losses = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..last, 0.0..max_loss.max(1e-3))?;
    losses.configure_mesh().x_desc("epoch").draw()?;
    losses
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.epoch, p.train_loss)),
            &BLUE,
        ))?
        .label("train")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    losses
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.epoch, p.test_loss)),
            &RED,
        ))?
        .label("test")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    losses
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;

    let low = points
        .iter()
        .map(|p| p.test_accuracy)
        .fold(1.0, f64::min)
        .min(0.95)
        * 100.0;
    let mut accuracy = ChartBuilder::on(&right)
        .caption("test accuracy (%)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..last, low..100.0)?;
    accuracy.configure_mesh().x_desc("epoch").draw()?;
    accuracy.draw_series(LineSeries::new(
        points.iter().map(|p| (p.epoch, p.test_accuracy * 100.0)),
        &GREEN,
    ))?;
    root.present()?;
    Ok(())
}
