//! [`ImageFolder`]: images in one sub-folder per class (`root/cat/1.png`,
//! `root/dog/7.jpg`), decoded with the `image` crate (PNG, JPEG, BMP),
//! resized, cropped, normalised, as CHW f32.
//!
//! Classes are the sub-folders sorted by name (bytes of the OS name), and
//! a class keeps its index even when its folder is empty, so labels never
//! shift between two folders with the same classes. Files and folders whose
//! name starts with `.` are ignored. Paths need not be UTF-8.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader};

use super::cache::{ByteLru, CacheStats};
use super::dataset::{check_out, index_error, Dataset, Target};
use super::rng::Rng;
use crate::error::{Error, Result};

/// What to do with a file that is not a readable PNG, JPEG or BMP image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFiles {
    /// Leave it out, count it in [`ImageFolder::report`], and print one
    /// warning line to stderr when the folder is opened.
    Skip,
    /// Fail opening the folder with an error naming the file.
    Error,
}

/// Where a crop is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crop {
    /// The middle (always, when the loader gives no generator).
    Center,
    /// A random offset in training (centre in evaluation).
    Random,
}

/// What opening the folder found besides the images.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Files left out under [`BadFiles::Skip`], with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Class folders without a single usable image.
    pub empty_classes: Vec<String>,
}

/// Options of an [`ImageFolder`]; see [`ImageFolder::builder`].
#[derive(Clone, Debug)]
pub struct ImageFolderBuilder {
    root: PathBuf,
    size: (u32, u32),
    crop: Option<(u32, u32, Crop)>,
    channels: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    bad_files: BadFiles,
    verify: bool,
    cache_bytes: usize,
}

impl ImageFolderBuilder {
    /// Resize every image to `width` x `height` (default 64 x 64; the
    /// aspect ratio is not kept).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }
    /// After resizing, crop to `width` x `height` at `crop`.
    pub fn crop(mut self, width: u32, height: u32, crop: Crop) -> Self {
        self.crop = Some((width, height, crop));
        self
    }
    /// 3 (RGB, default) or 1 (grey); every image is converted, so folders
    /// mixing grey, RGB and RGBA files give one shape.
    pub fn channels(mut self, channels: usize) -> Self {
        self.channels = channels;
        self
    }
    /// Normalise each channel as (value / 255 - mean) / std (default
    /// mean 0, std 1: values in [0, 1]). One value applies to all channels.
    pub fn normalize(mut self, mean: &[f32], std: &[f32]) -> Self {
        self.mean = mean.to_vec();
        self.std = std.to_vec();
        self
    }
    /// What to do with unreadable or unsupported files (default: skip).
    pub fn bad_files(mut self, policy: BadFiles) -> Self {
        self.bad_files = policy;
        self
    }
    /// Decode every image when opening (slower), so that corrupt pixel
    /// data are found then, under the [`BadFiles`] policy, rather than
    /// as an error during training. Without it only headers are checked.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }
    /// Keep up to `bytes` of decoded, resized images in memory (default
    /// 64 MiB; 0 disables the cache).
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Scans the folder.
    pub fn open(self) -> Result<ImageFolder> {
        ImageFolder::open_with(self)
    }
}

/// A classification dataset of image files, one sub-folder per class.
pub struct ImageFolder {
    options: ImageFolderBuilder,
    classes: Vec<String>,
    files: Vec<(PathBuf, i32)>,
    report: ScanReport,
    cache: ByteLru<usize>,
}

fn hidden(name: &OsString) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn sorted_entries(dir: &Path) -> Result<Vec<(OsString, PathBuf, bool)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Io(format!(
            "ImageFolder: cannot read folder {}: {e}",
            dir.display()
        ))
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Error::Io(format!("ImageFolder: cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name();
        if hidden(&name) {
            continue;
        }
        let path = entry.path();
        // Follow symbolic links, as a user pointing at a folder expects.
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn image_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for (_, path, is_dir) in sorted_entries(dir)? {
        if is_dir {
            image_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn reader(
    path: &Path,
) -> std::result::Result<ImageReader<std::io::BufReader<std::fs::File>>, String> {
    let reader = ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp) => Ok(reader),
        Some(other) => Err(format!(
            "unsupported image format {other:?} (PNG, JPEG and BMP are)"
        )),
        None => Err("not a PNG, JPEG or BMP image".into()),
    }
}

fn decode(path: &Path) -> std::result::Result<DynamicImage, String> {
    reader(path)?
        .decode()
        .map_err(|e| format!("corrupt image: {e}"))
}

fn check_header(path: &Path) -> std::result::Result<(), String> {
    let (w, h) = reader(path)?
        .into_dimensions()
        .map_err(|e| format!("corrupt image header: {e}"))?;
    if w == 0 || h == 0 {
        return Err(format!("image of size {w}x{h}"));
    }
    Ok(())
}

impl ImageFolder {
    /// Options for the folder at `root`: 64 x 64 RGB, no crop, values in
    /// [0, 1], bad files skipped, a 64 MiB cache.
    pub fn builder(root: impl AsRef<Path>) -> ImageFolderBuilder {
        ImageFolderBuilder {
            root: root.as_ref().to_path_buf(),
            size: (64, 64),
            crop: None,
            channels: 3,
            mean: vec![0.0],
            std: vec![1.0],
            bad_files: BadFiles::Skip,
            verify: false,
            cache_bytes: 64 << 20,
        }
    }

    fn open_with(options: ImageFolderBuilder) -> Result<ImageFolder> {
        let root = options.root.clone();
        let invalid =
            |why: String| Error::InvalidArgument(format!("ImageFolder {}: {why}", root.display()));
        if options.channels != 1 && options.channels != 3 {
            return Err(invalid(format!(
                "{} channels (1 or 3 are supported)",
                options.channels
            )));
        }
        if options.size.0 == 0 || options.size.1 == 0 {
            return Err(invalid(format!("image size {:?}", options.size)));
        }
        if let Some((w, h, _)) = options.crop {
            if w == 0 || h == 0 || w > options.size.0 || h > options.size.1 {
                return Err(invalid(format!(
                    "crop {w}x{h} does not fit in the resized {}x{}",
                    options.size.0, options.size.1
                )));
            }
        }
        for stats in [&options.mean, &options.std] {
            if stats.len() != 1 && stats.len() != options.channels {
                return Err(invalid(format!(
                    "normalisation has {} values for {} channels",
                    stats.len(),
                    options.channels
                )));
            }
        }
        if options.std.iter().any(|&s| s.is_nan() || s <= 0.0) {
            return Err(invalid(format!("std {:?} must be positive", options.std)));
        }
        let mut classes = Vec::new();
        let mut files = Vec::new();
        let mut report = ScanReport::default();
        for (name, path, is_dir) in sorted_entries(&root)? {
            if !is_dir {
                continue; // files beside the class folders belong to no class
            }
            let label = classes.len() as i32;
            let class = name.to_string_lossy().into_owned();
            let mut found = Vec::new();
            image_files(&path, &mut found)?;
            let before = files.len();
            for file in found {
                let checked = if options.verify {
                    decode(&file).map(|_| ())
                } else {
                    check_header(&file)
                };
                match checked {
                    Ok(()) => files.push((file, label)),
                    Err(why) => match options.bad_files {
                        BadFiles::Error => {
                            return Err(Error::Io(format!(
                                "ImageFolder: {}: {why}",
                                file.display()
                            )))
                        }
                        BadFiles::Skip => report.skipped.push((file, why)),
                    },
                }
            }
            if files.len() == before {
                if options.bad_files == BadFiles::Error {
                    return Err(invalid(format!("class folder {class} has no images")));
                }
                report.empty_classes.push(class.clone());
            }
            classes.push(class);
        }
        if files.is_empty() {
            return Err(invalid(format!(
                "no usable images in {} class folders ({} files skipped)",
                classes.len(),
                report.skipped.len()
            )));
        }
        if let Some((path, why)) = report.skipped.first() {
            eprintln!(
                "warning: ImageFolder {}: skipped {} unreadable or unsupported files (first: {}: {why})",
                root.display(),
                report.skipped.len(),
                path.display()
            );
        }
        if !report.empty_classes.is_empty() {
            eprintln!(
                "warning: ImageFolder {}: class folders without images (their labels are kept): {}",
                root.display(),
                report.empty_classes.join(", ")
            );
        }
        let cache = ByteLru::new(options.cache_bytes);
        Ok(ImageFolder {
            options,
            classes,
            files,
            report,
            cache,
        })
    }

    /// Class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    /// The image files and their labels, in sample order.
    pub fn files(&self) -> &[(PathBuf, i32)] {
        &self.files
    }
    /// Skipped files and empty classes.
    pub fn report(&self) -> &ScanReport {
        &self.report
    }
    /// The decoded-image cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Sample `index` decoded and resized, HWC u8 (through the cache).
    fn resized(&self, index: usize) -> Result<Arc<[u8]>> {
        if let Some(pixels) = self.cache.get(&index) {
            return Ok(pixels);
        }
        let path = &self.files[index].0;
        let image = decode(path)
            .map_err(|why| Error::Io(format!("ImageFolder: {}: {why}", path.display())))?;
        let (w, h) = self.options.size;
        let pixels: Arc<[u8]> = if self.options.channels == 3 {
            let mut rgb = image.to_rgb8();
            if rgb.dimensions() != (w, h) {
                rgb = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
            }
            rgb.into_raw().into()
        } else {
            let mut grey = image.to_luma8();
            if grey.dimensions() != (w, h) {
                grey = image::imageops::resize(&grey, w, h, FilterType::Triangle);
            }
            grey.into_raw().into()
        };
        self.cache.insert(index, pixels.clone());
        Ok(pixels)
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn feature_shape(&self) -> Vec<usize> {
        let (w, h) = match self.options.crop {
            Some((w, h, _)) => (w, h),
            None => self.options.size,
        };
        vec![self.options.channels, h as usize, w as usize]
    }
    fn read_into(&self, index: usize, rng: Option<&mut Rng>, out: &mut [f32]) -> Result<Target> {
        if index >= self.files.len() {
            return Err(index_error("ImageFolder", index, self.len()));
        }
        let shape = self.feature_shape();
        check_out("ImageFolder", out, shape.iter().product())?;
        let pixels = self.resized(index)?;
        let (c, oh, ow) = (shape[0], shape[1], shape[2]);
        let (w, h) = (self.options.size.0 as usize, self.options.size.1 as usize);
        let (x0, y0) = match (self.options.crop, rng) {
            (Some((_, _, Crop::Random)), Some(rng)) => {
                (rng.below(w - ow + 1), rng.below(h - oh + 1))
            }
            _ => ((w - ow) / 2, (h - oh) / 2),
        };
        let stat = |v: &[f32], ch: usize| if v.len() == 1 { v[0] } else { v[ch] };
        for ch in 0..c {
            let (mean, std) = (stat(&self.options.mean, ch), stat(&self.options.std, ch));
            let plane = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
            for y in 0..oh {
                for x in 0..ow {
                    let p = pixels[((y0 + y) * w + x0 + x) * c + ch];
                    plane[y * ow + x] = (f32::from(p) / 255.0 - mean) / std;
                }
            }
        }
        Ok(Target::Class(self.files[index].1))
    }
    fn target(&self, index: usize) -> Result<Target> {
        self.files
            .get(index)
            .map(|f| Target::Class(f.1))
            .ok_or_else(|| index_error("ImageFolder", index, self.len()))
    }
}
