//! A model: an input shape and a sequence of layers.

use std::ffi::CString;

use serde::{Deserialize, Serialize};

use super::layer::{Layer, LayerKind};
use crate::error::{Error, Result};
use crate::sys;

/// A model spec. Build with [`Model::builder`]; train with
/// [`crate::Trainer`]. Serialises to JSON (checkpoints store it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Shape of one input sample (CHW for images).
    pub input_shape: Vec<i64>,
    /// The layers, applied in order.
    pub layers: Vec<Layer>,
}

impl Model {
    /// Starts a model taking samples of `input_shape`, e.g. `[1, 28, 28]`.
    pub fn builder(input_shape: impl AsRef<[i64]>) -> ModelBuilder {
        ModelBuilder {
            model: Model {
                input_shape: input_shape.as_ref().to_vec(),
                layers: Vec::new(),
            },
        }
    }

    /// The C structs, and the names they point into (keep both alive together).
    pub(crate) fn to_sys(&self) -> Result<(Vec<sys::fm_layer_spec>, Vec<Option<CString>>)> {
        let names = self
            .layers
            .iter()
            .map(|l| {
                l.name
                    .as_deref()
                    .map(|n| {
                        CString::new(n).map_err(|_| {
                            Error::InvalidArgument(format!("layer name {n:?} has a NUL byte"))
                        })
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let specs = self
            .layers
            .iter()
            .zip(&names)
            .map(|(l, n)| l.to_sys(n.as_ref()))
            .collect();
        Ok((specs, names))
    }
}

/// Builds a [`Model`] layer by layer; every method adds one layer.
#[derive(Clone, Debug)]
pub struct ModelBuilder {
    model: Model,
}

impl ModelBuilder {
    /// Adds an arbitrary layer.
    pub fn layer(mut self, layer: Layer) -> ModelBuilder {
        self.model.layers.push(layer);
        self
    }

    fn kind(self, kind: LayerKind, set: impl FnOnce(&mut Layer)) -> ModelBuilder {
        let mut layer = Layer::new(kind);
        set(&mut layer);
        self.layer(layer)
    }

    /// Names the last layer (parameters become "<name>.weight", ...).
    pub fn named(mut self, name: &str) -> ModelBuilder {
        if let Some(last) = self.model.layers.last_mut() {
            last.name = Some(name.to_owned());
        }
        self
    }

    /// Fully connected layer with `units` outputs.
    pub fn dense(self, units: i64) -> ModelBuilder {
        self.kind(LayerKind::Dense, |l| l.units = units)
    }
    /// `units` x `kernel` x `kernel` convolution, stride 1, no padding.
    pub fn conv2d(self, units: i64, kernel: i64) -> ModelBuilder {
        self.kind(LayerKind::Conv2d, |l| {
            (l.units, l.kernel_size) = (units, [kernel, kernel])
        })
    }
    /// Convolution with stride and padding.
    pub fn conv2d_with(self, units: i64, kernel: i64, stride: i64, padding: i64) -> ModelBuilder {
        self.kind(LayerKind::Conv2d, |l| {
            (l.units, l.kernel_size, l.stride, l.padding) = (
                units,
                [kernel, kernel],
                [stride, stride],
                [padding, padding],
            )
        })
    }
    /// Transposed convolution.
    pub fn conv_transpose2d(
        self,
        units: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> ModelBuilder {
        self.kind(LayerKind::ConvTranspose2d, |l| {
            (l.units, l.kernel_size, l.stride, l.padding) = (
                units,
                [kernel, kernel],
                [stride, stride],
                [padding, padding],
            )
        })
    }
    /// `kernel` x `kernel` max pooling with stride `kernel`.
    pub fn max_pool2d(self, kernel: i64) -> ModelBuilder {
        self.kind(LayerKind::MaxPool2d, |l| l.kernel_size = [kernel, kernel])
    }
    /// `kernel` x `kernel` average pooling with stride `kernel`.
    pub fn avg_pool2d(self, kernel: i64) -> ModelBuilder {
        self.kind(LayerKind::AvgPool2d, |l| l.kernel_size = [kernel, kernel])
    }
    /// Mean over height and width.
    pub fn global_avg_pool(self) -> ModelBuilder {
        self.kind(LayerKind::GlobalAvgPool, |_| {})
    }
    /// Keeps the batch dim and flattens the rest.
    pub fn flatten(self) -> ModelBuilder {
        self.kind(LayerKind::Flatten, |_| {})
    }
    /// Dropout with probability `rate` (training only).
    pub fn dropout(self, rate: f64) -> ModelBuilder {
        self.kind(LayerKind::Dropout, |l| l.rate = rate)
    }
    /// Batch normalisation over channels.
    pub fn batch_norm(self) -> ModelBuilder {
        self.kind(LayerKind::BatchNorm, |_| {})
    }
    /// Layer normalisation over each sample.
    pub fn layer_norm(self) -> ModelBuilder {
        self.kind(LayerKind::LayerNorm, |_| {})
    }
    /// ReLU.
    pub fn relu(self) -> ModelBuilder {
        self.kind(LayerKind::Relu, |_| {})
    }
    /// Leaky ReLU.
    pub fn leaky_relu(self, slope: f64) -> ModelBuilder {
        self.kind(LayerKind::LeakyRelu, |l| l.slope = slope)
    }
    /// ELU.
    pub fn elu(self, alpha: f64) -> ModelBuilder {
        self.kind(LayerKind::Elu, |l| l.alpha = alpha)
    }
    /// Sigmoid.
    pub fn sigmoid(self) -> ModelBuilder {
        self.kind(LayerKind::Sigmoid, |_| {})
    }
    /// Tanh.
    pub fn tanh(self) -> ModelBuilder {
        self.kind(LayerKind::Tanh, |_| {})
    }
    /// Swish (SiLU).
    pub fn swish(self) -> ModelBuilder {
        self.kind(LayerKind::Swish, |_| {})
    }
    /// GELU (erf form).
    pub fn gelu(self) -> ModelBuilder {
        self.kind(LayerKind::Gelu, |_| {})
    }
    /// Softmax over dim 1.
    pub fn softmax(self) -> ModelBuilder {
        self.kind(LayerKind::Softmax, |_| {})
    }

    /// The model. Shapes are checked when a trainer or inference engine is
    /// made from it (errors name the layer).
    pub fn build(self) -> Result<Model> {
        if self.model.layers.is_empty() {
            return Err(Error::InvalidArgument(
                "Model::build: the model has no layers".into(),
            ));
        }
        Ok(self.model)
    }
}
