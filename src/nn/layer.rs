//! One layer of a model: what the C ABI's `fm_layer_spec` holds, in Rust
//! types that serialise to a checkpoint's JSON.

use serde::{Deserialize, Serialize};

use crate::sys;

/// What a layer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum LayerKind {
    Dense,
    Conv2d,
    ConvTranspose2d,
    MaxPool2d,
    AvgPool2d,
    GlobalAvgPool,
    Flatten,
    Dropout,
    BatchNorm,
    LayerNorm,
    Relu,
    LeakyRelu,
    Elu,
    Sigmoid,
    Tanh,
    Swish,
    Gelu,
    Softmax,
}

impl LayerKind {
    fn to_sys(self) -> sys::fm_layer_kind {
        match self {
            LayerKind::Dense => sys::FM_LAYER_DENSE,
            LayerKind::Conv2d => sys::FM_LAYER_CONV2D,
            LayerKind::ConvTranspose2d => sys::FM_LAYER_CONV_TRANSPOSE2D,
            LayerKind::MaxPool2d => sys::FM_LAYER_MAX_POOL2D,
            LayerKind::AvgPool2d => sys::FM_LAYER_AVG_POOL2D,
            LayerKind::GlobalAvgPool => sys::FM_LAYER_GLOBAL_AVG_POOL,
            LayerKind::Flatten => sys::FM_LAYER_FLATTEN,
            LayerKind::Dropout => sys::FM_LAYER_DROPOUT,
            LayerKind::BatchNorm => sys::FM_LAYER_BATCH_NORM,
            LayerKind::LayerNorm => sys::FM_LAYER_LAYER_NORM,
            LayerKind::Relu => sys::FM_LAYER_RELU,
            LayerKind::LeakyRelu => sys::FM_LAYER_LEAKY_RELU,
            LayerKind::Elu => sys::FM_LAYER_ELU,
            LayerKind::Sigmoid => sys::FM_LAYER_SIGMOID,
            LayerKind::Tanh => sys::FM_LAYER_TANH,
            LayerKind::Swish => sys::FM_LAYER_SWISH,
            LayerKind::Gelu => sys::FM_LAYER_GELU,
            LayerKind::Softmax => sys::FM_LAYER_SOFTMAX,
        }
    }
}

/// How a layer's weight starts (biases start at zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum WeightInit {
    #[default]
    HeUniform,
    HeNormal,
    XavierUniform,
    XavierNormal,
    /// Uniform in [-1, 1).
    Uniform,
    Zeros,
}

/// One layer with its settings (fields a kind does not use are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// What it does.
    pub kind: LayerKind,
    /// Parameter name prefix; `None` gives "<kind><index>".
    pub name: Option<String>,
    /// Output features (dense) or channels (convolutions).
    pub units: i64,
    /// Window size (convolutions, pooling).
    pub kernel_size: [i64; 2],
    /// Window step; for pooling 0 means the kernel size.
    pub stride: [i64; 2],
    /// Zero padding on each side.
    pub padding: [i64; 2],
    /// Kernel tap spacing.
    pub dilation: [i64; 2],
    /// Extra output size (transposed convolution).
    pub output_padding: [i64; 2],
    /// Channel groups.
    pub groups: i64,
    /// Whether dense and convolution layers add a bias.
    pub bias: bool,
    /// Dropout probability.
    pub rate: f64,
    /// Leaky ReLU slope.
    pub slope: f64,
    /// ELU alpha.
    pub alpha: f64,
    /// Batch norm momentum.
    pub momentum: f64,
    /// Normalisation epsilon.
    pub eps: f64,
    /// GELU tanh approximation.
    pub approximate: bool,
    /// Weight initialisation.
    pub init: WeightInit,
    /// Weight seed; 0 derives it from the trainer's seed and the layer index.
    pub seed: u64,
}

impl Layer {
    /// A layer of `kind` with the C ABI's defaults.
    pub fn new(kind: LayerKind) -> Layer {
        // SAFETY: no preconditions; the kind is a known value.
        let s = unsafe { sys::fm_layer_spec_default(kind.to_sys()) };
        Layer {
            kind,
            name: None,
            units: s.units,
            kernel_size: s.kernel_size,
            stride: s.stride,
            padding: s.padding,
            dilation: s.dilation,
            output_padding: s.output_padding,
            groups: s.groups,
            bias: s.bias != 0,
            rate: s.rate,
            slope: s.slope,
            alpha: s.alpha,
            momentum: s.momentum,
            eps: s.eps,
            approximate: s.approximate != 0,
            init: WeightInit::HeUniform,
            seed: s.seed,
        }
    }

    /// The C struct; `name` must outlive its use (it points into it).
    pub(crate) fn to_sys(&self, name: Option<&std::ffi::CString>) -> sys::fm_layer_spec {
        sys::fm_layer_spec {
            kind: self.kind.to_sys(),
            name: name.map_or(std::ptr::null(), |n| n.as_ptr()),
            units: self.units,
            kernel_size: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            output_padding: self.output_padding,
            groups: self.groups,
            bias: self.bias as i32,
            rate: self.rate,
            slope: self.slope,
            alpha: self.alpha,
            momentum: self.momentum,
            eps: self.eps,
            approximate: self.approximate as i32,
            init: match self.init {
                WeightInit::HeUniform => sys::FM_INIT_HE_UNIFORM,
                WeightInit::HeNormal => sys::FM_INIT_HE_NORMAL,
                WeightInit::XavierUniform => sys::FM_INIT_XAVIER_UNIFORM,
                WeightInit::XavierNormal => sys::FM_INIT_XAVIER_NORMAL,
                WeightInit::Uniform => sys::FM_INIT_UNIFORM,
                WeightInit::Zeros => sys::FM_INIT_ZEROS,
            },
            seed: self.seed,
        }
    }
}
