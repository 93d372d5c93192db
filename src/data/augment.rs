//! Augmentation of CHW f32 samples: random horizontal flip, random crop
//! with zero padding, brightness and contrast jitter.
//!
//! The loader hands each sample a generator made from (seed, epoch, index),
//! so the augmented data do not depend on the number of workers.

use super::rng::Rng;

/// Which augmentations to apply, in this order: crop, flip, brightness,
/// contrast. The default applies none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augment {
    /// Probability of mirroring left-right (0.5 is usual).
    pub flip: f32,
    /// Pad each side by this many zeros, then crop back to the original
    /// size at a random offset (4 for 32x32 images is usual); 0 for none.
    pub crop_padding: usize,
    /// Add a uniform offset in [-b, b] to every value (in feature units,
    /// i.e. after normalisation); 0 for none.
    pub brightness: f32,
    /// Scale each channel around its mean by a factor in [1 - c, 1 + c]; 0 for none.
    pub contrast: f32,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Augment {
        Augment::default()
    }
    /// Random horizontal flips with probability `p`.
    pub fn flip(mut self, p: f32) -> Augment {
        self.flip = p;
        self
    }
    /// Random crops after padding by `padding`.
    pub fn crop_padding(mut self, padding: usize) -> Augment {
        self.crop_padding = padding;
        self
    }
    /// Brightness jitter of up to `b`.
    pub fn brightness(mut self, b: f32) -> Augment {
        self.brightness = b;
        self
    }
    /// Contrast jitter of up to `c`.
    pub fn contrast(mut self, c: f32) -> Augment {
        self.contrast = c;
        self
    }

    /// Whether any augmentation is enabled.
    pub fn is_identity(&self) -> bool {
        *self == Augment::default()
    }

    /// Augments one sample `x` of shape `[c, h, w]` in place. Shapes of
    /// another rank are left alone (tabular features are not images).
    pub fn apply(&self, x: &mut [f32], shape: &[usize], rng: &mut Rng) {
        let &[c, h, w] = shape else { return };
        if x.len() != c * h * w {
            return;
        }
        if self.crop_padding > 0 {
            let p = self.crop_padding;
            let (dy, dx) = (rng.below(2 * p + 1), rng.below(2 * p + 1));
            // Output (y, x) reads padded (y + dy, x + dx), i.e. source
            // (y + dy - p, x + dx - p), zero outside the image.
            let source = x.to_vec();
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        let (sy, sx) = (
                            (y + dy) as isize - p as isize,
                            (xx + dx) as isize - p as isize,
                        );
                        x[(ch * h + y) * w + xx] =
                            if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                                source[(ch * h + sy as usize) * w + sx as usize]
                            } else {
                                0.0
                            };
                    }
                }
            }
        }
        if self.flip > 0.0 && rng.chance(self.flip) {
            for row in x.chunks_exact_mut(w) {
                row.reverse();
            }
        }
        if self.brightness > 0.0 {
            let delta = rng.uniform(-self.brightness, self.brightness);
            x.iter_mut().for_each(|v| *v += delta);
        }
        if self.contrast > 0.0 {
            let factor = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast);
            for plane in x.chunks_exact_mut(h * w) {
                let mean = plane.iter().sum::<f32>() / plane.len() as f32;
                plane
                    .iter_mut()
                    .for_each(|v| *v = mean + (*v - mean) * factor);
            }
        }
    }
}
