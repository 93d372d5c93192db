//! Trains the cats-vs-dogs CNN of DESIGN.md (cnn64: 3x64x64 -> conv 8, 16,
//! 32 (3x3, stride 2, pad 1, ReLU) -> dense 64 ReLU -> dense 2, Adam 1e-3,
//! batch 32) on any folder of images with one sub-folder per class, holding
//! out a stratified validation split. The repository ships `data/digits64`
//! (made by `examples/make_image_folder.rs`).
//!
//!     cargo run --release --example image_folder -- data/digits64 --epochs 3

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ferrometal::data::{train_validation_split, Augment, DataLoader, ImageFolder};
use ferrometal::train::Fit;
use ferrometal::{Device, Loss, Optimizer, Trainer};

#[derive(Parser, Debug)]
#[command(about = "Train cnn64 on an image folder (one sub-folder per class)")]
struct Args {
    /// The folder of class sub-folders.
    folder: PathBuf,
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Loader threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Fraction held out for validation (stratified by class).
    #[arg(long, default_value_t = 0.2)]
    validation: f64,
    /// Random horizontal flips in training.
    #[arg(long)]
    flip: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Exit with an error if the final validation accuracy is lower (for CI).
    #[arg(long)]
    min_accuracy: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = Device::cpu()?;
    let images = Arc::new(
        ImageFolder::builder(&args.folder)
            .size(64, 64)
            .normalize(&[0.5], &[0.5])
            .open()?,
    );
    let classes = images.classes().to_vec();
    let (train, valid) = train_validation_split(images, args.validation, true, args.seed)?;
    println!(
        "{}: classes {classes:?}, {} training and {} validation images",
        args.folder.display(),
        ferrometal::data::Dataset::len(&train),
        ferrometal::data::Dataset::len(&valid)
    );
    let augment = if args.flip {
        Augment::none().flip(0.5)
    } else {
        Augment::none()
    };
    let train = DataLoader::new(Arc::new(train), &device, args.batch_size)?
        .shuffle(args.seed)
        .workers(args.workers)
        .prefetch(4)
        .augment(augment);
    let valid = DataLoader::new(Arc::new(valid), &device, 256)?.workers(args.workers);
    let model = ferrometal::nn::reference::cnn64(classes.len() as i64)?;
    let loss = Loss::CrossEntropy {
        label_smoothing: 0.0,
    };
    let mut trainer = Trainer::new(&device, &model, &Optimizer::adam(args.lr), loss, args.seed)?;
    let started = std::time::Instant::now();
    let (_, reports) = Fit::new(args.epochs)
        .on_epoch(|r| {
            let (vloss, vacc) = r.validation.unwrap_or((f64::NAN, f64::NAN));
            println!(
                "epoch {}: train loss {:.4}, validation loss {vloss:.4}, accuracy {:.2} %",
                r.epoch,
                r.train_loss,
                vacc * 100.0
            );
            Ok(())
        })
        .run(&mut trainer, &train, Some(&valid))?;
    let accuracy = reports
        .last()
        .and_then(|r| r.validation)
        .map_or(0.0, |v| v.1);
    println!(
        "validation accuracy {:.2} % after {} epochs in {:.1} s",
        accuracy * 100.0,
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(min) = args.min_accuracy {
        anyhow::ensure!(accuracy >= min, "accuracy {accuracy:.4} is below {min}");
    }
    Ok(())
}
