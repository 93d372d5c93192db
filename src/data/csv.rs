//! [`CsvDataset`]: a table of numeric features and one target column, for
//! classification or regression.

use std::collections::BTreeSet;
use std::path::Path;

use super::dataset::{Dataset, InMemory, Target};
use super::rng::Rng;
use crate::error::{Error, Result};

/// What the target column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsvTask {
    /// Class labels. If every label is a non-negative integer it is used
    /// as the class index; otherwise the distinct labels, sorted, are the
    /// classes (see [`CsvDataset::classes`]).
    Classification,
    /// A real-valued target.
    Regression,
}

/// A CSV file with a header row, every column but the target a number.
#[derive(Clone, Debug)]
pub struct CsvDataset {
    data: InMemory,
    feature_names: Vec<String>,
    classes: Vec<String>,
}

impl CsvDataset {
    /// Reads `path`; `target` names the target column in the header row.
    pub fn open(path: impl AsRef<Path>, target: &str, task: CsvTask) -> Result<CsvDataset> {
        let path = path.as_ref();
        let at = |what: String| Error::Io(format!("CSV {}: {what}", path.display()));
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(::csv::Trim::All)
            .from_path(path)
            .map_err(|e| at(format!("cannot open: {e}")))?;
        let headers = reader
            .headers()
            .map_err(|e| at(format!("cannot read the header row: {e}")))?
            .clone();
        let target_column = headers.iter().position(|h| h == target).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "CSV {}: no column named {target:?} (columns: {})",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let feature_names: Vec<String> = headers
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != target_column)
            .map(|(_, h)| h.to_string())
            .collect();
        if feature_names.is_empty() {
            return Err(at("no feature columns besides the target".into()));
        }
        let mut features = Vec::new();
        let mut raw_targets = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| at(format!("{e}")))?;
            let line = record.position().map_or(0, |p| p.line());
            for (column, field) in record.iter().enumerate() {
                if column == target_column {
                    raw_targets.push(field.to_string());
                    continue;
                }
                let value: f32 = field.parse().map_err(|_| {
                    at(format!(
                        "line {line}, column {:?}: {field:?} is not a number",
                        headers.get(column).unwrap_or("?")
                    ))
                })?;
                if !value.is_finite() {
                    return Err(at(format!(
                        "line {line}, column {:?}: {field:?} is not finite",
                        headers.get(column).unwrap_or("?")
                    )));
                }
                features.push(value);
            }
        }
        if raw_targets.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "CSV {}: no data rows (an empty dataset)",
                path.display()
            )));
        }
        let shape = [feature_names.len()];
        let (data, classes) = match task {
            CsvTask::Regression => {
                let mut values = Vec::with_capacity(raw_targets.len());
                for (row, t) in raw_targets.iter().enumerate() {
                    values.push(t.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(
                        || {
                            at(format!(
                                "data row {}: target {t:?} is not a finite number",
                                row + 1
                            ))
                        },
                    )?);
                }
                (InMemory::regression(features, &shape, &values)?, Vec::new())
            }
            CsvTask::Classification => {
                let numeric: Option<Vec<i32>> = raw_targets
                    .iter()
                    .map(|t| t.parse::<i32>().ok().filter(|&v| v >= 0))
                    .collect();
                match numeric {
                    Some(labels) => (
                        InMemory::classification(features, &shape, &labels)?,
                        Vec::new(),
                    ),
                    None => {
                        let classes: Vec<String> = raw_targets
                            .iter()
                            .cloned()
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        let labels: Vec<i32> = raw_targets
                            .iter()
                            .map(|t| classes.binary_search(t).unwrap_or(0) as i32)
                            .collect();
                        (
                            InMemory::classification(features, &shape, &labels)?,
                            classes,
                        )
                    }
                }
            }
        };
        Ok(CsvDataset {
            data,
            feature_names,
            classes,
        })
    }

    /// The feature columns' names, in feature order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }
    /// Class names by index, when the labels were not integers (else empty).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

impl Dataset for CsvDataset {
    fn len(&self) -> usize {
        self.data.len()
    }
    fn feature_shape(&self) -> Vec<usize> {
        self.data.feature_shape()
    }
    fn read_into(&self, index: usize, rng: Option<&mut Rng>, out: &mut [f32]) -> Result<Target> {
        self.data.read_into(index, rng, out)
    }
    fn target(&self, index: usize) -> Result<Target> {
        self.data.target(index)
    }
}
