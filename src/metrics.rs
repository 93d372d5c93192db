//! Metrics as small accumulators: `update` with a batch, `compute` the
//! value so far, `reset` for the next epoch. They run on the host, on the
//! (small) outputs a trainer's `predict` returns. `update` checks that the
//! batch's parts fit together and returns an error naming the mismatch
//! (nothing is added then); it never panics.

use crate::error::{Error, Result};

/// Errors unless `scores` holds `classes` scores for each of `labels`.
fn check_scores(metric: &str, scores: &[f32], classes: usize, labels: usize) -> Result<()> {
    if classes == 0 {
        return Err(Error::InvalidArgument(format!(
            "{metric}::update: argument 'classes' is 0"
        )));
    }
    if Some(scores.len()) != classes.checked_mul(labels) {
        return Err(Error::ShapeMismatch(format!(
            "{metric}::update: {} scores for {labels} labels of {classes} classes (needs {labels} x {classes})",
            scores.len()
        )));
    }
    Ok(())
}

/// Errors unless the two slices of one batch have the same length.
fn check_lengths(metric: &str, what: [&str; 2], a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::ShapeMismatch(format!(
            "{metric}::update: {a} {} but {b} {}",
            what[0], what[1]
        )));
    }
    Ok(())
}

/// Share of samples whose highest score is the true class.
#[derive(Clone, Debug, Default)]
pub struct Accuracy {
    correct: u64,
    total: u64,
}

impl Accuracy {
    /// Adds a batch of `scores` ([n, classes], row-major) with `labels` [n].
    pub fn update(&mut self, scores: &[f32], classes: usize, labels: &[i32]) -> Result<()> {
        check_scores("Accuracy", scores, classes, labels.len())?;
        for (row, &label) in scores.chunks(classes).zip(labels) {
            self.correct += (usize::try_from(label) == Ok(argmax(row))) as u64;
            self.total += 1;
        }
        Ok(())
    }
    /// Adds predicted classes directly.
    pub fn update_predictions(&mut self, predicted: &[i32], labels: &[i32]) -> Result<()> {
        check_lengths(
            "Accuracy",
            ["predictions", "labels"],
            predicted.len(),
            labels.len(),
        )?;
        self.correct += predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as u64;
        self.total += labels.len() as u64;
        Ok(())
    }
    /// The accuracy (0 before any update).
    pub fn compute(&self) -> f64 {
        ratio(self.correct, self.total)
    }
    /// Starts over.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Share of samples whose true class is among the `k` highest scores.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    hits: u64,
    total: u64,
}

impl TopK {
    /// Top-`k` accuracy.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            hits: 0,
            total: 0,
        }
    }
    /// Adds a batch of `scores` ([n, classes]) with `labels`.
    pub fn update(&mut self, scores: &[f32], classes: usize, labels: &[i32]) -> Result<()> {
        check_scores("TopK", scores, classes, labels.len())?;
        for (row, &label) in scores.chunks(classes).zip(labels) {
            let Some(&own) = usize::try_from(label).ok().and_then(|l| row.get(l)) else {
                self.total += 1;
                continue;
            };
            // Classes scoring strictly higher (ties favour the true class).
            let above = row.iter().filter(|&&s| s > own).count();
            self.hits += (above < self.k) as u64;
            self.total += 1;
        }
        Ok(())
    }
    /// The top-k accuracy.
    pub fn compute(&self) -> f64 {
        ratio(self.hits, self.total)
    }
    /// Starts over.
    pub fn reset(&mut self) {
        self.hits = 0;
        self.total = 0;
    }
}

/// Counts of (true class, predicted class), and the per-class metrics
/// derived from them.
#[derive(Clone, Debug)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

/// How per-class precision, recall and F1 are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Average {
    /// Unweighted mean over classes.
    Macro,
    /// From the totals over all classes (equals accuracy for single-label problems).
    Micro,
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> ConfusionMatrix {
        ConfusionMatrix {
            classes,
            counts: vec![0; classes * classes],
        }
    }
    /// Adds predicted and true classes (values outside the classes are ignored).
    pub fn update(&mut self, predicted: &[i32], labels: &[i32]) -> Result<()> {
        check_lengths(
            "ConfusionMatrix",
            ["predictions", "labels"],
            predicted.len(),
            labels.len(),
        )?;
        let class = |c: i32| usize::try_from(c).ok().filter(|&c| c < self.classes);
        for (&p, &l) in predicted.iter().zip(labels) {
            if let (Some(p), Some(l)) = (class(p), class(l)) {
                self.counts[l * self.classes + p] += 1;
            }
        }
        Ok(())
    }
    /// Samples of true class `truth` predicted as `predicted` (0 for classes
    /// outside the matrix).
    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        if truth >= self.classes || predicted >= self.classes {
            return 0;
        }
        self.counts[truth * self.classes + predicted]
    }
    fn column(&self, c: usize) -> u64 {
        (0..self.classes).map(|t| self.get(t, c)).sum()
    }
    fn row(&self, c: usize) -> u64 {
        (0..self.classes).map(|p| self.get(c, p)).sum()
    }
    /// Precision (of the predictions of a class, the share that were right).
    pub fn precision(&self, average: Average) -> f64 {
        match average {
            Average::Micro => self.micro(),
            Average::Macro => self.macro_mean(|c| ratio(self.get(c, c), self.column(c))),
        }
    }
    /// Recall (of the samples of a class, the share found).
    pub fn recall(&self, average: Average) -> f64 {
        match average {
            Average::Micro => self.micro(),
            Average::Macro => self.macro_mean(|c| ratio(self.get(c, c), self.row(c))),
        }
    }
    /// F1, the harmonic mean of precision and recall (per class for macro).
    pub fn f1(&self, average: Average) -> f64 {
        match average {
            Average::Micro => self.micro(),
            Average::Macro => self.macro_mean(|c| {
                let (p, r) = (
                    ratio(self.get(c, c), self.column(c)),
                    ratio(self.get(c, c), self.row(c)),
                );
                if p + r == 0.0 {
                    0.0
                } else {
                    2.0 * p * r / (p + r)
                }
            }),
        }
    }
    fn micro(&self) -> f64 {
        let diagonal: u64 = (0..self.classes).map(|c| self.get(c, c)).sum();
        ratio(diagonal, self.counts.iter().sum())
    }
    fn macro_mean(&self, per_class: impl Fn(usize) -> f64) -> f64 {
        if self.classes == 0 {
            return 0.0;
        }
        (0..self.classes).map(per_class).sum::<f64>() / self.classes as f64
    }
    /// Starts over.
    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
    }
}

/// Area under the ROC curve of a binary problem (ties counted as half).
#[derive(Clone, Debug, Default)]
pub struct AucRoc {
    scored: Vec<(f32, bool)>,
}

impl AucRoc {
    /// Adds scores (higher = more positive) and whether each sample is positive.
    pub fn update(&mut self, scores: &[f32], positive: &[bool]) -> Result<()> {
        check_lengths("AucRoc", ["scores", "labels"], scores.len(), positive.len())?;
        self.scored
            .extend(scores.iter().copied().zip(positive.iter().copied()));
        Ok(())
    }
    /// The AUC, or `None` unless both classes were seen.
    pub fn compute(&self) -> Option<f64> {
        let mut sorted = self.scored.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let positives = sorted.iter().filter(|s| s.1).count() as f64;
        let negatives = sorted.len() as f64 - positives;
        if positives == 0.0 || negatives == 0.0 {
            return None;
        }
        // Mann-Whitney: the sum of positive ranks, ties given their mean rank.
        let (mut rank_sum, mut i) = (0.0, 0);
        while i < sorted.len() {
            let mut j = i;
            while j < sorted.len() && sorted[j].0 == sorted[i].0 {
                j += 1;
            }
            let mean_rank = (i + j + 1) as f64 / 2.0;
            rank_sum += mean_rank * sorted[i..j].iter().filter(|s| s.1).count() as f64;
            i = j;
        }
        Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
    }
    /// Starts over.
    pub fn reset(&mut self) {
        self.scored.clear();
    }
}

/// Regression errors over predictions and targets: MAE, MSE, RMSE and R².
#[derive(Clone, Debug, Default)]
pub struct Regression {
    count: f64,
    abs_sum: f64,
    sq_sum: f64,
    target_sum: f64,
    target_sq_sum: f64,
}

impl Regression {
    /// Adds predictions and their targets.
    pub fn update(&mut self, predicted: &[f32], targets: &[f32]) -> Result<()> {
        check_lengths(
            "Regression",
            ["predictions", "targets"],
            predicted.len(),
            targets.len(),
        )?;
        for (&p, &t) in predicted.iter().zip(targets) {
            let (p, t) = (f64::from(p), f64::from(t));
            self.count += 1.0;
            self.abs_sum += (p - t).abs();
            self.sq_sum += (p - t) * (p - t);
            self.target_sum += t;
            self.target_sq_sum += t * t;
        }
        Ok(())
    }
    /// Mean absolute error.
    pub fn mae(&self) -> f64 {
        self.abs_sum / self.count.max(1.0)
    }
    /// Mean squared error.
    pub fn mse(&self) -> f64 {
        self.sq_sum / self.count.max(1.0)
    }
    /// Root mean squared error.
    pub fn rmse(&self) -> f64 {
        self.mse().sqrt()
    }
    /// Coefficient of determination: 1 - SS_res / SS_tot (0 when targets are constant).
    pub fn r2(&self) -> f64 {
        let total = self.target_sq_sum - self.target_sum * self.target_sum / self.count.max(1.0);
        if total <= 0.0 {
            0.0
        } else {
            1.0 - self.sq_sum / total
        }
    }
    /// Starts over.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Index of the first maximum.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
