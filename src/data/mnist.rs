//! MNIST from its four IDX files (gzip), normalised as torchvision does.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One split of MNIST: images as normalised f32 [n, 1, 28, 28], labels as i32.
#[derive(Clone, Debug)]
pub struct MnistSplit {
    /// `len() * 784` values, (pixel / 255 - 0.1307) / 0.3081.
    pub images: Vec<f32>,
    /// Digits 0-9.
    pub labels: Vec<i32>,
}

impl MnistSplit {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `count` samples (or all, if fewer).
    pub fn take(&self, count: usize) -> MnistSplit {
        let count = count.min(self.len());
        MnistSplit {
            images: self.images[..count * 784].to_vec(),
            labels: self.labels[..count].to_vec(),
        }
    }
}

/// The MNIST training (60,000) and test (10,000) sets.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// Training split.
    pub train: MnistSplit,
    /// Test split.
    pub test: MnistSplit,
}

impl Mnist {
    /// Reads `train-images-idx3-ubyte.gz` and the three other files from `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        Ok(Mnist {
            train: split(dir, "train")?,
            test: split(dir, "t10k")?,
        })
    }

    /// The copy committed in this repository (`data/mnist`).
    pub fn bundled() -> Result<Mnist> {
        Mnist::load(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("data")
                .join("mnist"),
        )
    }
}

fn split(dir: &Path, prefix: &str) -> Result<MnistSplit> {
    let images = read_idx(&dir.join(format!("{prefix}-images-idx3-ubyte.gz")), 0x0803)?;
    let labels = read_idx(&dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), 0x0801)?;
    if images.dims.len() != 3
        || images.dims[1..] != [28, 28]
        || labels.dims.len() != 1
        || images.dims[0] != labels.dims[0]
    {
        return Err(Error::Io(format!(
            "MNIST in {}: images {:?} and labels {:?} do not fit together",
            dir.display(),
            images.dims,
            labels.dims
        )));
    }
    let images = images
        .data
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - 0.1307) / 0.3081)
        .collect();
    let labels: Vec<i32> = labels.data.iter().map(|&l| i32::from(l)).collect();
    if let Some(bad) = labels.iter().find(|&&l| !(0..10).contains(&l)) {
        return Err(Error::Io(format!(
            "MNIST labels in {}: {bad} is not a digit",
            dir.display()
        )));
    }
    Ok(MnistSplit { images, labels })
}

struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

fn read_idx(path: &PathBuf, magic: u32) -> Result<Idx> {
    let file = std::fs::File::open(path).map_err(|e| {
        Error::Io(format!(
            "cannot open {}: {e} (the MNIST files are expected there)",
            path.display()
        ))
    })?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Io(format!("{} is not a valid gzip file: {e}", path.display())))?;
    let corrupt = |why: &str| Error::Io(format!("{} is not an IDX file: {why}", path.display()));
    if bytes.len() < 4 {
        return Err(corrupt("it is shorter than its header"));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(corrupt(&format!(
            "magic number {found:#x}, expected {magic:#x}"
        )));
    }
    let rank = (magic & 0xff) as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(corrupt("it is shorter than its header"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|c| c.checked_add(header));
    if count != Some(bytes.len()) {
        return Err(corrupt(&format!(
            "{} data bytes for dims {dims:?}, expected {}",
            bytes.len() - header,
            count.map_or("more than memory holds".into(), |c| (c - header)
                .to_string())
        )));
    }
    bytes.drain(..header);
    Ok(Idx { dims, data: bytes })
}

impl super::Dataset for MnistSplit {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn feature_shape(&self) -> Vec<usize> {
        vec![1, 28, 28]
    }
    fn read_into(
        &self,
        index: usize,
        _rng: Option<&mut super::Rng>,
        out: &mut [f32],
    ) -> Result<super::Target> {
        let label = *self
            .labels
            .get(index)
            .ok_or_else(|| super::dataset::index_error("MNIST", index, self.len()))?;
        super::dataset::check_out("MNIST", out, 784)?;
        out.copy_from_slice(&self.images[index * 784..(index + 1) * 784]);
        Ok(super::Target::Class(label))
    }
    fn target(&self, index: usize) -> Result<super::Target> {
        self.labels
            .get(index)
            .map(|&l| super::Target::Class(l))
            .ok_or_else(|| super::dataset::index_error("MNIST", index, self.len()))
    }
}
