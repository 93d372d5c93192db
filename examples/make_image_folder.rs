//! Writes the small image folder shipped in `data/digits64`: the first 200
//! training images of MNIST digits 0 and 1, upscaled to 64x64 RGB PNGs, one
//! sub-folder per digit. Deterministic, so rerunning it reproduces the files.
//!
//!     cargo run --release --example make_image_folder -- data/digits64 --per-class 200

use std::path::PathBuf;

use clap::Parser;
use ferrometal::data::Mnist;
use image::imageops::FilterType;

#[derive(Parser, Debug)]
#[command(about = "Write an ImageFolder of two MNIST digit classes as 64x64 RGB PNGs")]
struct Args {
    /// Output folder (created; existing files are overwritten).
    #[arg(default_value = "data/digits64")]
    out: PathBuf,
    /// Images per class.
    #[arg(long, default_value_t = 200)]
    per_class: usize,
    /// The digits to use, one class each.
    #[arg(long, value_delimiter = ',', default_values_t = [0, 1])]
    digits: Vec<i32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let train = Mnist::bundled()?.train;
    for &digit in &args.digits {
        let dir = args.out.join(digit.to_string());
        std::fs::create_dir_all(&dir)?;
        let indices = (0..train.len()).filter(|&i| train.labels[i] == digit);
        for (n, i) in indices.take(args.per_class).enumerate() {
            // Undo the MNIST normalisation back to 0..255 grey levels.
            let grey: Vec<u8> = train.images[i * 784..(i + 1) * 784]
                .iter()
                .map(|&v| ((v * 0.3081 + 0.1307) * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect();
            let small = image::GrayImage::from_raw(28, 28, grey).expect("28x28 pixels");
            let large = image::imageops::resize(&small, 64, 64, FilterType::Triangle);
            let rgb = image::DynamicImage::ImageLuma8(large).to_rgb8();
            rgb.save(dir.join(format!("{n:03}.png")))?;
        }
    }
    println!(
        "wrote {} images per class for digits {:?} to {}",
        args.per_class,
        args.digits,
        args.out.display()
    );
    Ok(())
}
