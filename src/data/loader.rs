//! [`DataLoader`]: batches of a [`Dataset`], collated by worker threads
//! ahead of the training step.
//!
//! Each epoch's order comes from (seed, epoch), as [`super::Batches`]'
//! does, and each sample's random transforms from (seed, epoch, index), so
//! the batches are the same with 0, 1 or 8 workers. Workers collate whole
//! batches into host `Vec<f32>` staging buffers and hand them over through
//! bounded channels (`std::sync::mpsc::sync_channel`): at most the prefetch
//! depth of batches wait, so memory stays bounded while loading overlaps
//! the step. Workers collate straight into [`Staging`] memory (pinned on
//! CUDA) taken from the loader's pool, so a batch reaches the device in one
//! direct copy ([`Tensor::from_staging_on`]), made on the loader's own
//! stream so that it need not wait for the training step in flight; the
//! staging buffer goes back to the pool when the batch is dropped.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use super::augment::Augment;
use super::batches::Batches;
use super::dataset::{Dataset, Target};
use super::rng::Rng;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::staging::Staging;
use crate::stream::Stream;
use crate::tensor::Tensor;
use crate::train::BatchSource;

/// The targets of a collated batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Class labels, one per sample (a tensor of i32 [n]).
    Classes(Vec<i32>),
    /// Regression targets, one per sample (a tensor of f32 [n, 1]).
    Values(Vec<f32>),
}

impl Targets {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(v) => v.len(),
            Targets::Values(v) => v.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Staging buffers of one loader, reused batch after batch (pinning memory
/// is slow on CUDA; reusing it is free).
struct StagingPool {
    device: Device,
    idle: Mutex<Vec<Staging<f32>>>,
}

impl StagingPool {
    /// Idle buffers kept beyond this are freed (workers + prefetch bound
    /// how many are ever in use).
    const MAX_IDLE: usize = 16;

    /// A zeroed run of `len` floats.
    fn take(self: &Arc<Self>, len: usize) -> Result<StagedInputs> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let best = (0..idle.len())
                .filter(|&i| idle[i].len() >= len)
                .min_by_key(|&i| idle[i].len());
            best.map(|i| idle.swap_remove(i))
        };
        let mut staging = match reused {
            Some(staging) => staging,
            None => Staging::new(&self.device, len)?,
        };
        staging.as_mut_slice()[..len].fill(0.0);
        Ok(StagedInputs {
            staging: ManuallyDrop::new(staging),
            len,
            pool: Arc::downgrade(self),
        })
    }
}

/// A batch's features in [`Staging`] memory (pinned on CUDA), handed back
/// to the loader's pool when dropped. Reads and writes as a `[f32]`.
pub struct StagedInputs {
    // Taken out only by Drop, which hands it back to the pool.
    staging: ManuallyDrop<Staging<f32>>,
    len: usize,
    pool: Weak<StagingPool>,
}

impl StagedInputs {
    /// The staging buffer (it may be longer than the batch).
    pub fn staging(&self) -> &Staging<f32> {
        &self.staging
    }
}

impl Deref for StagedInputs {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.staging().as_slice()[..self.len]
    }
}

impl DerefMut for StagedInputs {
    fn deref_mut(&mut self) -> &mut [f32] {
        let len = self.len;
        &mut self.staging.as_mut_slice()[..len]
    }
}

impl Drop for StagedInputs {
    fn drop(&mut self) {
        // SAFETY: `staging` is taken once, here, and never used again.
        let staging = unsafe { ManuallyDrop::take(&mut self.staging) };
        if let Some(pool) = self.pool.upgrade() {
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < StagingPool::MAX_IDLE {
                idle.push(staging);
            }
        }
    }
}

impl Clone for StagedInputs {
    /// A copy in a new staging buffer. Panics if the host cannot provide
    /// one, as `Vec` does (`Clone` cannot return an error; no input leads
    /// here, only exhausted memory).
    #[allow(clippy::panic)]
    fn clone(&self) -> StagedInputs {
        let pool = self.pool.upgrade().unwrap_or_else(|| {
            Arc::new(StagingPool {
                device: self.staging().device().clone(),
                idle: Mutex::new(Vec::new()),
            })
        });
        let mut copy = pool
            .take(self.len)
            .unwrap_or_else(|e| panic!("StagedInputs::clone: {e}"));
        copy.copy_from_slice(self);
        copy
    }
}

impl PartialEq for StagedInputs {
    fn eq(&self, other: &StagedInputs) -> bool {
        self[..] == other[..]
    }
}

impl std::fmt::Debug for StagedInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One batch collated in host memory, ready to be copied to the device.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    /// The dataset indices of the samples, in batch order.
    pub indices: Vec<usize>,
    /// `[n, feature_shape...]`.
    pub shape: Vec<usize>,
    /// The features, row-major in `shape`, in staging memory.
    pub inputs: StagedInputs,
    /// The targets.
    pub targets: Targets,
}

impl HostBatch {
    /// The (inputs, targets) tensors on `device`.
    pub fn to_device(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        self.to_device_on(device, None)
    }

    /// As [`to_device`](HostBatch::to_device), copying on `stream` (see
    /// [`Tensor::from_staging_on`]).
    pub fn to_device_on(
        &self,
        device: &Device,
        stream: Option<&Stream>,
    ) -> Result<(Tensor, Tensor)> {
        let inputs = if self.inputs.staging().device() == device {
            Tensor::from_staging_on(device, &self.shape, self.inputs.staging(), stream)?
        } else {
            Tensor::from_slice(device, &self.shape, &self.inputs)?
        };
        let targets = match &self.targets {
            Targets::Classes(v) => Tensor::from_slice(device, &[v.len()], v)?,
            Targets::Values(v) => Tensor::from_slice(device, &[v.len(), 1], v)?,
        };
        Ok((inputs, targets))
    }
}

#[derive(Clone)]
struct Config {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
    random_transforms: bool,
    augment: Augment,
    staging: Arc<StagingPool>,
}

impl Config {
    fn order(&self, epoch: u64) -> Vec<Vec<usize>> {
        Batches::new(
            self.dataset.len(),
            self.batch_size,
            self.shuffle,
            self.seed,
            epoch,
        )
        .drop_last(self.drop_last)
        .collect()
    }

    fn collate(&self, indices: Vec<usize>, epoch: u64) -> Result<HostBatch> {
        let sample_shape = self.dataset.feature_shape();
        let per_sample: usize = sample_shape.iter().product();
        let mut inputs = self.staging.take(per_sample * indices.len())?;
        let mut targets: Option<Targets> = None;
        for (slot, &index) in inputs.chunks_exact_mut(per_sample).zip(&indices) {
            let mut rng = Rng::for_sample(self.seed, epoch, index);
            let target =
                self.dataset
                    .read_into(index, self.random_transforms.then_some(&mut rng), slot)?;
            if !self.augment.is_identity() {
                self.augment.apply(slot, &sample_shape, &mut rng);
            }
            match (&mut targets, target) {
                (None, Target::Class(c)) => targets = Some(Targets::Classes(vec![c])),
                (None, Target::Value(v)) => targets = Some(Targets::Values(vec![v])),
                (Some(Targets::Classes(t)), Target::Class(c)) => t.push(c),
                (Some(Targets::Values(t)), Target::Value(v)) => t.push(v),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "DataLoader: sample {index} has a {target:?} target, the batch's others are of the other kind"
                    )))
                }
            }
        }
        let mut shape = vec![indices.len()];
        shape.extend(sample_shape);
        Ok(HostBatch {
            indices,
            shape,
            inputs,
            targets: targets.unwrap_or(Targets::Classes(Vec::new())),
        })
    }
}

/// Batches of a dataset for training or evaluation; implements
/// [`BatchSource`] so [`crate::train::Fit`] can run from it.
///
/// ```no_run
/// use std::sync::Arc;
/// use ferrometal::data::{DataLoader, ImageFolder};
/// # fn main() -> ferrometal::Result<()> {
/// let device = ferrometal::Device::cpu()?;
/// let images = Arc::new(ImageFolder::builder("data/digits64").open()?);
/// let loader = DataLoader::new(images, &device, 32)?.shuffle(7).workers(2);
/// for batch in loader.host_epoch(1) {
///     let batch = batch?; // inputs [32, 3, 64, 64], i32 labels
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DataLoader {
    config: Config,
    device: Device,
    // Copies batches to the device apart from the training step's queue.
    upload: Option<Arc<Mutex<Stream>>>,
    workers: usize,
    prefetch: usize,
}

impl DataLoader {
    /// Batches of `batch_size` samples of `dataset` in index order, no
    /// workers (loaded on the calling thread), tensors made on `device`.
    /// An empty dataset or a zero batch size is an error.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        device: &Device,
        batch_size: usize,
    ) -> Result<DataLoader> {
        if dataset.is_empty() {
            return Err(Error::InvalidArgument(
                "DataLoader: the dataset is empty".into(),
            ));
        }
        if batch_size == 0 {
            return Err(Error::InvalidArgument("DataLoader: batch size 0".into()));
        }
        if dataset.feature_shape().iter().product::<usize>() == 0 {
            return Err(Error::InvalidArgument(format!(
                "DataLoader: the dataset's samples have shape {:?}, with no values",
                dataset.feature_shape()
            )));
        }
        Ok(DataLoader {
            config: Config {
                dataset,
                batch_size,
                shuffle: false,
                seed: 0,
                drop_last: false,
                random_transforms: false,
                augment: Augment::none(),
                staging: Arc::new(StagingPool {
                    device: device.clone(),
                    idle: Mutex::new(Vec::new()),
                }),
            },
            upload: device
                .new_stream()
                .ok()
                .map(|stream| Arc::new(Mutex::new(stream))),
            device: device.clone(),
            workers: 0,
            prefetch: 2,
        })
    }

    /// Shuffle every epoch, from (seed, epoch); also seeds augmentation.
    pub fn shuffle(mut self, seed: u64) -> DataLoader {
        self.config.shuffle = true;
        self.config.seed = seed;
        self
    }
    /// The seed of random transforms and augmentation, without shuffling.
    pub fn seed(mut self, seed: u64) -> DataLoader {
        self.config.seed = seed;
        self
    }
    /// Skip a last batch smaller than the batch size.
    pub fn drop_last(mut self, drop: bool) -> DataLoader {
        self.config.drop_last = drop;
        self
    }
    /// Load on `n` threads (0: on the consuming thread, no overlap).
    pub fn workers(mut self, n: usize) -> DataLoader {
        self.workers = n;
        self
    }
    /// At most `depth` collated batches waiting (at least one per worker).
    pub fn prefetch(mut self, depth: usize) -> DataLoader {
        self.prefetch = depth;
        self
    }
    /// Let the dataset apply its random transforms (e.g. an
    /// [`super::ImageFolder`] random crop); off by default, for evaluation.
    pub fn random_transforms(mut self, on: bool) -> DataLoader {
        self.config.random_transforms = on;
        self
    }
    /// Augment every sample (see [`Augment`]).
    pub fn augment(mut self, augment: Augment) -> DataLoader {
        self.config.augment = augment;
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.config.dataset
    }
    /// Number of batches per epoch.
    pub fn batch_count(&self) -> usize {
        Batches::new(
            self.config.dataset.len(),
            self.config.batch_size,
            false,
            0,
            0,
        )
        .drop_last(self.config.drop_last)
        .batch_count()
    }

    /// The batches of `epoch` (1-based), collated in host memory.
    pub fn host_epoch(&self, epoch: u64) -> HostEpoch {
        let order = self.config.order(epoch);
        let total = order.len();
        if self.workers == 0 {
            return HostEpoch {
                config: self.config.clone(),
                epoch,
                pending: order.into_iter(),
                receivers: Vec::new(),
                threads: Vec::new(),
                next: 0,
                total,
                done: false,
            };
        }
        let workers = self.workers.min(total.max(1));
        let capacity = self.prefetch.div_ceil(workers).max(1);
        let order = Arc::new(order);
        let (mut receivers, mut threads) = (Vec::new(), Vec::new());
        for w in 0..workers {
            let (sender, receiver) = sync_channel::<Result<HostBatch>>(capacity);
            let (config, order) = (self.config.clone(), order.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ferrometal-loader-{w}"))
                .spawn(move || {
                    for b in (w..order.len()).step_by(workers) {
                        let batch = config.collate(order[b].clone(), epoch);
                        let failed = batch.is_err();
                        // A send fails when the epoch was dropped: stop.
                        if sender.send(batch).is_err() || failed {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    let (sender, receiver) = sync_channel(1);
                    let _ = sender.send(Err(Error::Io(format!(
                        "DataLoader: cannot start worker thread {w}: {e}"
                    ))));
                    receivers.push(receiver);
                    continue;
                }
            }
            receivers.push(receiver);
        }
        HostEpoch {
            config: self.config.clone(),
            epoch,
            pending: Vec::new().into_iter(),
            receivers,
            threads,
            next: 0,
            total,
            done: false,
        }
    }
}

impl BatchSource for DataLoader {
    fn batches(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + '_> {
        Box::new(self.host_epoch(epoch).map(move |batch| {
            batch.and_then(|b| match &self.upload {
                Some(upload) => {
                    let stream = upload.lock().unwrap_or_else(|e| e.into_inner());
                    b.to_device_on(&self.device, Some(&stream))
                }
                None => b.to_device(&self.device),
            })
        }))
    }
}

/// The host batches of one epoch, in order. Dropping it early stops the
/// workers (they finish the batch in hand).
pub struct HostEpoch {
    config: Config,
    epoch: u64,
    pending: std::vec::IntoIter<Vec<usize>>,
    receivers: Vec<Receiver<Result<HostBatch>>>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
    done: bool,
}

impl Iterator for HostEpoch {
    type Item = Result<HostBatch>;

    fn next(&mut self) -> Option<Result<HostBatch>> {
        if self.done || self.next >= self.total {
            return None;
        }
        let item = if self.receivers.is_empty() {
            let indices = self.pending.next()?;
            self.config.collate(indices, self.epoch)
        } else {
            let worker = self.next % self.receivers.len();
            self.receivers[worker].recv().unwrap_or_else(|_| {
                Err(Error::Io(format!(
                    "DataLoader: worker {worker} ended without batch {} (it panicked)",
                    self.next
                )))
            })
        };
        self.next += 1;
        self.done = item.is_err();
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.done { 0 } else { self.total - self.next };
        (left, Some(left))
    }
}

impl Drop for HostEpoch {
    fn drop(&mut self) {
        // Closing the channels first makes every blocked send fail, so the
        // joins below cannot wait on a full queue.
        self.receivers.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
