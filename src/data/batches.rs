//! Mini-batches of an in-memory dataset, shuffled per epoch from a seed.

/// Yields the sample indices of each batch of one epoch.
#[derive(Clone, Debug)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    position: usize,
    drop_last: bool,
}

impl Batches {
    /// The batches of `len` samples for `epoch`; `shuffle` permutes them
    /// with a generator seeded by (seed, epoch), so every run repeats.
    pub fn new(len: usize, batch_size: usize, shuffle: bool, seed: u64, epoch: u64) -> Batches {
        let mut order: Vec<usize> = (0..len).collect();
        if shuffle {
            let mut state = seed ^ epoch.wrapping_mul(0x9e3779b97f4a7c15);
            let mut next = move || {
                state = state.wrapping_add(0x9e3779b97f4a7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
                z ^ (z >> 31)
            };
            for i in (1..len).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        Batches {
            order,
            batch_size: batch_size.max(1),
            position: 0,
            drop_last: false,
        }
    }

    /// Skip a final batch smaller than the batch size.
    pub fn drop_last(mut self, drop: bool) -> Batches {
        self.drop_last = drop;
        self
    }

    /// Number of batches this epoch.
    pub fn batch_count(&self) -> usize {
        if self.drop_last {
            self.order.len() / self.batch_size
        } else {
            self.order.len().div_ceil(self.batch_size)
        }
    }
}

impl Iterator for Batches {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let end = (self.position + self.batch_size).min(self.order.len());
        if self.position >= end || (self.drop_last && end - self.position < self.batch_size) {
            return None;
        }
        let batch = self.order[self.position..end].to_vec();
        self.position = end;
        Some(batch)
    }
}
