//! The small generator behind every random choice of the data pipeline.
//!
//! A sample's randomness comes from (seed, epoch, index) alone, never from
//! which worker thread loaded it, so a run repeats with any worker count.

/// SplitMix64: tiny, fast and good enough for shuffles and augmentation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator of sample `index` in `epoch` of a run seeded by `seed`.
    pub fn for_sample(seed: u64, epoch: u64, index: usize) -> Rng {
        let mut mix = Rng(seed ^ epoch.wrapping_mul(GOLDEN));
        let a = mix.next_u64();
        let mut mix = Rng(a ^ (index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        Rng(mix.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.next_f32()
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.next_f32() < p
    }
}
