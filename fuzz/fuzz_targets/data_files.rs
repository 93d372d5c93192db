//! The file readers: the first byte picks one, the rest becomes its files
//! in a fresh folder (MNIST's four IDX files, a CSV file, an image folder
//! of two classes), which is then opened and read sample by sample. Any
//! panic is a finding; errors are fine.
#![no_main]

use std::path::{Path, PathBuf};

use ferrometal::data::{CsvDataset, CsvTask, Dataset, ImageFolder, Mnist};
use libfuzzer_sys::fuzz_target;

fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrometal-fuzz-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

/// `data` cut into `n` parts at the positions its first bytes give.
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let (cuts, rest) = data.split_at(n.min(data.len()));
    let mut out = Vec::new();
    let mut at = 0;
    for (i, c) in cuts.iter().enumerate() {
        let end = if i + 1 == n {
            rest.len()
        } else {
            (at + *c as usize * 8).min(rest.len())
        };
        out.push(&rest[at..end]);
        at = end;
    }
    while out.len() < n {
        out.push(&[]);
    }
    out
}

fn read_all(dataset: &dyn Dataset) {
    for i in 0..dataset.len().min(64) {
        let _ = dataset.sample(i);
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("writing a fuzz file");
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    let dir = folder();
    match which % 3 {
        0 => {
            let names = [
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ];
            for (name, bytes) in names.iter().zip(parts(data, 4)) {
                write(&dir.join(name), bytes);
            }
            if let Ok(mnist) = Mnist::load(&dir) {
                let _ = mnist.train.len();
            }
        }
        1 => {
            let path = dir.join("data.csv");
            write(&path, data);
            for task in [CsvTask::Classification, CsvTask::Regression] {
                if let Ok(csv) = CsvDataset::open(&path, "y", task) {
                    read_all(&csv);
                }
            }
        }
        _ => {
            let files = parts(data, 4);
            for (i, bytes) in files.iter().enumerate() {
                let class = dir.join(if i % 2 == 0 { "cat" } else { "dog" });
                let _ = std::fs::create_dir_all(&class);
                let ext = ["png", "jpg", "ppm", "bmp"][i];
                write(&class.join(format!("{i}.{ext}")), bytes);
            }
            if let Ok(images) = ImageFolder::builder(&dir).size(8, 8).open() {
                read_all(&images);
            }
        }
    }
});
