//! The data pipeline: datasets, loader, cache, splits, augmentation, bad
//! input, and the image-folder example's training run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrometal::data::{
    train_validation_split, Augment, BadFiles, ByteLru, Crop, CsvDataset, CsvTask, DataLoader,
    Dataset, HostBatch, ImageFolder, InMemory, Rng, Target, Targets,
};
use ferrometal::train::Fit;
use ferrometal::{Device, Error, Loss, Optimizer, Trainer};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits64")
}

/// A fresh temporary folder, removed when dropped.
struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferrometal-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_png(path: &Path, w: u32, h: u32, value: u8) {
    image::RgbImage::from_pixel(w, h, image::Rgb([value, value / 2, 255 - value]))
        .save(path)
        .unwrap();
}

fn numbered(n: usize, shape: &[usize]) -> InMemory {
    let per: usize = shape.iter().product();
    let features = (0..n * per).map(|v| v as f32).collect();
    let labels: Vec<i32> = (0..n as i32).map(|i| i % 3).collect();
    InMemory::classification(features, shape, &labels).unwrap()
}

fn all_batches(loader: &DataLoader, epoch: u64) -> Vec<HostBatch> {
    loader.host_epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn loader_batches_cover_the_epoch_and_shuffle_per_epoch() {
    let device = Device::cpu().unwrap();
    let data: Arc<dyn Dataset> = Arc::new(numbered(10, &[2]));
    let plain = DataLoader::new(data.clone(), &device, 4).unwrap();
    let batches = all_batches(&plain, 1);
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].shape, [2, 2]);
    assert_eq!(
        batches[0].inputs[..],
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    );
    assert_eq!(batches[0].targets, Targets::Classes(vec![0, 1, 2, 0]));
    let dropped = DataLoader::new(data.clone(), &device, 4)
        .unwrap()
        .drop_last(true);
    assert_eq!(dropped.batch_count(), 2);
    assert_eq!(all_batches(&dropped, 1).len(), 2);

    let shuffled = DataLoader::new(data, &device, 4).unwrap().shuffle(3);
    let order = |epoch| -> Vec<usize> {
        all_batches(&shuffled, epoch)
            .into_iter()
            .flat_map(|b| b.indices)
            .collect()
    };
    let (e1, e2) = (order(1), order(2));
    let mut sorted = e1.clone();
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_ne!(e1, e2, "each epoch has its own order");
    assert_eq!(e1, order(1), "an epoch repeats");
}

#[test]
fn workers_and_prefetch_do_not_change_the_batches() {
    let device = Device::cpu().unwrap();
    let images: Arc<dyn Dataset> = Arc::new(
        ImageFolder::builder(shipped())
            .size(40, 40)
            .crop(32, 32, Crop::Random)
            .open()
            .unwrap(),
    );
    let subset = ferrometal::data::Subset::new(images, (0..400).step_by(5).collect()).unwrap();
    let subset: Arc<dyn Dataset> = Arc::new(subset);
    let augment = Augment::none()
        .flip(0.5)
        .crop_padding(2)
        .brightness(0.1)
        .contrast(0.2);
    let loader = |workers, prefetch| {
        DataLoader::new(subset.clone(), &device, 16)
            .unwrap()
            .shuffle(11)
            .random_transforms(true)
            .augment(augment)
            .workers(workers)
            .prefetch(prefetch)
    };
    let reference = all_batches(&loader(0, 1), 2);
    assert_eq!(reference, all_batches(&loader(1, 1), 2));
    assert_eq!(reference, all_batches(&loader(2, 3), 2));
    assert_ne!(
        reference,
        all_batches(&loader(2, 3), 3),
        "augmentation differs per epoch"
    );
    // An epoch dropped half-way stops its workers.
    let mut partial = loader(2, 2).host_epoch(1);
    assert!(partial.next().unwrap().is_ok());
    drop(partial);
}

#[test]
fn image_folder_reads_classes_shapes_and_normalises() {
    let images = ImageFolder::builder(shipped())
        .normalize(&[0.5], &[0.5])
        .open()
        .unwrap();
    assert_eq!(images.classes(), ["0", "1"]);
    assert_eq!(images.len(), 400);
    assert_eq!(images.feature_shape(), [3, 64, 64]);
    assert!(images.report().skipped.is_empty());
    let sample = images.sample(0).unwrap();
    assert_eq!(sample.target, Target::Class(0));
    assert_eq!(images.sample(399).unwrap().target, Target::Class(1));
    assert!(sample.features.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert!(
        sample.features.iter().any(|&v| v > 0.5),
        "the digit is bright"
    );
    assert!(matches!(images.sample(400), Err(Error::InvalidArgument(_))));

    let grey = ImageFolder::builder(shipped())
        .channels(1)
        .size(28, 28)
        .open()
        .unwrap();
    assert_eq!(grey.feature_shape(), [1, 28, 28]);
    assert_eq!(grey.sample(5).unwrap().features.len(), 784);
}

#[test]
fn bad_image_files_are_skipped_or_refused_by_policy() {
    let dir = TempDir::new("bad");
    let (a, b, empty) = (dir.0.join("a"), dir.0.join("b"), dir.0.join("c_empty"));
    for d in [&a, &b, &empty] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Mixed sizes and channel counts: RGB 10x20, grey 64x64, RGBA 7x7.
    write_png(&a.join("rgb.png"), 10, 20, 200);
    image::GrayImage::from_pixel(64, 64, image::Luma([90]))
        .save(a.join("grey.png"))
        .unwrap();
    image::RgbaImage::from_pixel(7, 7, image::Rgba([1, 2, 3, 4]))
        .save(b.join("rgba.png"))
        .unwrap();
    image::RgbImage::from_pixel(5, 5, image::Rgb([9, 9, 9]))
        .save(b.join("small.bmp"))
        .unwrap();
    // A non-UTF-8 file name.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        write_png(
            &b.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png")),
            8,
            8,
            30,
        );
    }
    // Corrupt and unsupported files.
    std::fs::write(a.join("notes.txt"), "not an image").unwrap();
    std::fs::write(
        b.join("truncated.png"),
        &std::fs::read(a.join("grey.png")).unwrap()[..30],
    )
    .unwrap();
    std::fs::write(b.join("fake.jpg"), b"\xff\xd8\xff garbage").unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([1, 1, 1]))
        .save_with_format(b.join("picture.tga"), image::ImageFormat::Tga)
        .unwrap_or_else(|_| std::fs::write(b.join("picture.tga"), b"\0\0\x02").unwrap());
    std::fs::write(dir.0.join("stray.png"), b"beside the classes").unwrap();

    let images = ImageFolder::builder(&dir.0)
        .size(16, 16)
        .verify(true)
        .open()
        .unwrap();
    assert_eq!(
        images.classes(),
        ["a", "b", "c_empty"],
        "the empty class keeps its label"
    );
    assert_eq!(images.report().empty_classes, ["c_empty"]);
    let skipped: Vec<String> = images
        .report()
        .skipped
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    for name in ["notes.txt", "truncated.png", "fake.jpg", "picture.tga"] {
        assert!(
            skipped.iter().any(|s| s == name),
            "{name} not in {skipped:?}"
        );
    }
    let expected_b = if cfg!(unix) { 3 } else { 2 };
    assert_eq!(images.len(), 2 + expected_b);
    for i in 0..images.len() {
        let (path, label) = &images.files()[i];
        let class = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        assert_eq!(
            images.classes()[*label as usize],
            class,
            "label of {}",
            path.display()
        );
        assert_eq!(images.sample(i).unwrap().features.len(), 3 * 16 * 16);
    }

    let refused = ImageFolder::builder(&dir.0)
        .bad_files(BadFiles::Error)
        .open();
    match refused {
        Err(Error::Io(message)) => assert!(message.contains("notes.txt"), "{message}"),
        other => panic!(
            "expected an I/O error naming the file, got {other:?}",
            other = other.err()
        ),
    }
    // Only headers are checked without verify: corrupt pixel data then fail
    // when the sample is read, with the file named.
    std::fs::remove_file(a.join("notes.txt")).unwrap();
    let lazy = ImageFolder::builder(&dir.0).open().unwrap();
    let truncated = lazy
        .files()
        .iter()
        .position(|(p, _)| p.ends_with("truncated.png"));
    if let Some(i) = truncated {
        match lazy.sample(i) {
            Err(Error::Io(m)) => assert!(m.contains("truncated.png"), "{m}"),
            other => panic!("expected an error, got {:?}", other.map(|s| s.target)),
        }
    }
}

#[test]
fn empty_datasets_are_errors() {
    let dir = TempDir::new("empty");
    assert!(matches!(
        ImageFolder::builder(&dir.0).open(),
        Err(Error::InvalidArgument(_))
    ));
    std::fs::create_dir_all(dir.0.join("only_class")).unwrap();
    assert!(matches!(
        ImageFolder::builder(&dir.0).open(),
        Err(Error::InvalidArgument(_))
    ));
    let missing = ImageFolder::builder(dir.0.join("missing")).open();
    assert!(matches!(missing, Err(Error::Io(m)) if m.contains("missing")));
    let device = Device::cpu().unwrap();
    let empty = InMemory::classification(Vec::new(), &[3], &[]).unwrap();
    assert!(matches!(
        DataLoader::new(Arc::new(empty), &device, 4),
        Err(Error::InvalidArgument(_))
    ));
    assert!(DataLoader::new(Arc::new(numbered(3, &[1])), &device, 0).is_err());
    assert!(InMemory::classification(vec![1.0; 5], &[2], &[0, 1]).is_err());
}

#[test]
fn csv_reads_classification_and_regression() {
    let dir = TempDir::new("csv");
    let path = dir.0.join("table.csv");
    std::fs::write(
        &path,
        "x1,species,x2\n1.5,setosa,2\n3,virginica,4.25\n-1,setosa,0\n",
    )
    .unwrap();
    let classes = CsvDataset::open(&path, "species", CsvTask::Classification).unwrap();
    assert_eq!(classes.classes(), ["setosa", "virginica"]);
    assert_eq!(classes.feature_names(), ["x1", "x2"]);
    let s = classes.sample(1).unwrap();
    assert_eq!((s.features, s.target), (vec![3.0, 4.25], Target::Class(1)));

    let reg_path = dir.0.join("reg.csv");
    std::fs::write(&reg_path, "a,b,y\n1,2,0.5\n3,4,-2\n").unwrap();
    let reg = CsvDataset::open(&reg_path, "y", CsvTask::Regression).unwrap();
    assert_eq!(reg.sample(1).unwrap().target, Target::Value(-2.0));
    let device = Device::cpu().unwrap();
    let batch = DataLoader::new(Arc::new(reg), &device, 2)
        .unwrap()
        .host_epoch(1)
        .next()
        .unwrap()
        .unwrap();
    let (x, y) = batch.to_device(&device).unwrap();
    assert_eq!((x.shape(), y.shape()), (&[2, 2][..], &[2, 1][..]));

    let bad = dir.0.join("bad.csv");
    std::fs::write(&bad, "a,y\n1,0\nabc,1\n").unwrap();
    match CsvDataset::open(&bad, "y", CsvTask::Classification) {
        Err(Error::Io(m)) => assert!(m.contains("bad.csv") && m.contains("line 3"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    std::fs::write(&bad, "a,y\n1,0\n2\n").unwrap();
    assert!(matches!(
        CsvDataset::open(&bad, "y", CsvTask::Classification),
        Err(Error::Io(_))
    ));
    std::fs::write(&bad, "a,y\n").unwrap();
    assert!(matches!(
        CsvDataset::open(&bad, "y", CsvTask::Regression),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        CsvDataset::open(&path, "nope", CsvTask::Regression),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn stratified_split_keeps_class_proportions() {
    // 300 of class 0, 100 of class 1.
    let labels: Vec<i32> = (0..400).map(|i| i32::from(i % 4 == 3)).collect();
    let data: Arc<dyn Dataset> =
        Arc::new(InMemory::classification(vec![0.0; 400], &[1], &labels).unwrap());
    let (train, valid) = train_validation_split(data.clone(), 0.25, true, 5).unwrap();
    assert_eq!((train.len(), valid.len()), (300, 100));
    let ones =
        |s: &ferrometal::data::Subset| s.indices().iter().filter(|&&i| labels[i] == 1).count();
    assert_eq!(ones(&valid), 25);
    assert_eq!(ones(&train), 75);
    let mut all: Vec<usize> = train
        .indices()
        .iter()
        .chain(valid.indices())
        .copied()
        .collect();
    all.sort();
    assert_eq!(all, (0..400).collect::<Vec<_>>(), "a partition");
    let again = train_validation_split(data.clone(), 0.25, true, 5).unwrap();
    assert_eq!(
        again.1.indices(),
        valid.indices(),
        "reproducible from the seed"
    );
    let (_, plain) = train_validation_split(data.clone(), 0.25, false, 5).unwrap();
    assert_eq!(plain.len(), 100);
    assert!(train_validation_split(data, 1.5, true, 5).is_err());
}

#[test]
fn lru_cache_evicts_by_bytes() {
    let cache = ByteLru::new(100);
    let block = |n: usize| -> Arc<[u8]> { vec![0u8; n].into() };
    cache.insert(1, block(40));
    cache.insert(2, block(40));
    assert!(cache.get(&1).is_some()); // 1 is now the most recent
    cache.insert(3, block(40)); // 120 > 100: evicts 2, the least recent
    assert!(cache.contains(&1) && cache.contains(&3) && !cache.contains(&2));
    let stats = cache.stats();
    assert_eq!((stats.bytes, stats.entries, stats.evictions), (80, 2, 1));
    cache.insert(4, block(101)); // larger than the cache: not stored
    assert!(!cache.contains(&4));
    cache.insert(5, block(100)); // evicts everything else
    assert_eq!(cache.stats().bytes, 100);
    assert_eq!(cache.stats().entries, 1);

    let images = ImageFolder::builder(shipped())
        .cache_bytes(10 * 64 * 64 * 3)
        .open()
        .unwrap();
    for i in 0..20 {
        images.sample(i).unwrap();
    }
    let s = images.cache_stats();
    assert_eq!((s.entries, s.bytes), (10, 10 * 64 * 64 * 3));
    images.sample(19).unwrap();
    assert_eq!(images.cache_stats().hits, 1);
}

#[test]
fn augmentation_is_reproducible_and_does_what_it_says() {
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect(); // [1, 3, 4]
    let flip = Augment::none().flip(1.0);
    let mut y = x.clone();
    flip.apply(&mut y, &[1, 3, 4], &mut Rng::new(0));
    assert_eq!(&y[..4], [3.0, 2.0, 1.0, 0.0]);
    let jitter = Augment::none()
        .crop_padding(1)
        .brightness(0.5)
        .contrast(0.5);
    let run = |seed| {
        let mut y = x.clone();
        jitter.apply(&mut y, &[1, 3, 4], &mut Rng::for_sample(seed, 1, 7));
        y
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let mut tabular = vec![1.0, 2.0];
    jitter.apply(&mut tabular, &[2], &mut Rng::new(0));
    assert_eq!(tabular, [1.0, 2.0], "non-image shapes are left alone");
}

#[test]
fn mnist_is_a_dataset() {
    let mnist = ferrometal::data::Mnist::bundled().unwrap().test.take(10);
    assert_eq!(mnist.feature_shape(), [1, 28, 28]);
    let s = mnist.sample(3).unwrap();
    assert_eq!(s.features, mnist.images[3 * 784..4 * 784]);
    assert_eq!(s.target, Target::Class(mnist.labels[3]));
}

/// The image-folder example's model and settings on the shipped folder.
#[test]
fn cnn64_trains_to_high_accuracy_on_the_shipped_folder() {
    let device = Device::cpu().unwrap();
    let images = Arc::new(
        ImageFolder::builder(shipped())
            .normalize(&[0.5], &[0.5])
            .open()
            .unwrap(),
    );
    let (train, valid) = train_validation_split(images, 0.2, true, 42).unwrap();
    let train = DataLoader::new(Arc::new(train), &device, 32)
        .unwrap()
        .shuffle(42)
        .workers(2);
    let valid = DataLoader::new(Arc::new(valid), &device, 256)
        .unwrap()
        .workers(1);
    let model = ferrometal::nn::reference::cnn64(2).unwrap();
    let loss = Loss::CrossEntropy {
        label_smoothing: 0.0,
    };
    let mut trainer = Trainer::new(&device, &model, &Optimizer::adam(1e-3), loss, 42).unwrap();
    let (_, reports) = Fit::new(3).run(&mut trainer, &train, Some(&valid)).unwrap();
    let accuracy = reports.last().unwrap().validation.unwrap().1;
    assert!(accuracy >= 0.95, "validation accuracy {accuracy}");
}
