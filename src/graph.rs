//! Graphs: build a computation once (forward, gradients, optimizer update),
//! then compile it for a device and run it many times.
//!
//! ```
//! use ferrometal::{Device, Graph, Init, Optimizer, Tensor, DType, BATCH};
//! # fn main() -> ferrometal::Result<()> {
//! let g = Graph::new()?;
//! let x = g.placeholder("x", DType::F32, &[BATCH, 3])?;
//! let y = g.placeholder("y", DType::F32, &[BATCH, 1])?;
//! let w = g.variable("w", &[1, 3], Init::XavierUniform { seed: 7 })?;
//! let b = g.variable("b", &[1], Init::Zeros)?;
//! let loss = g.mse(g.linear(x, w, Some(b))?, y)?;
//! let grads = g.gradients(loss, &[w, b])?;
//! let step = g.optimizer(&Optimizer::sgd(0.1), &[(w, grads[0]), (b, grads[1])])?;
//!
//! let device = Device::cpu()?;
//! let mut exec = g.compile(&device)?;
//! let xs = Tensor::from_slice(&device, &[2, 3], &[1.0f32, 2.0, 3.0, 0.5, 0.0, -1.0])?;
//! let ys = Tensor::from_slice(&device, &[2, 1], &[1.0f32, -1.0])?;
//! let out = exec.run(&[(x, &xs), (y, &ys)], &[loss, step])?;
//! assert!(out[0].scalar()?.is_finite());
//! # Ok(())
//! # }
//! ```

use std::ffi::{CStr, CString};

use crate::device::Device;
use crate::dtype::{DType, Element};
use crate::error::{check, Error, Result};
use crate::handle::OwnedHandle;
use crate::sys;
use crate::tensor::{dims, Tensor};

/// A placeholder dim that is fixed only when fed: the batch (dim 0). In a
/// value's shape it marks a dim equal to the batch.
pub const BATCH: i64 = sys::FM_BATCH as i64;

/// In a value's shape: a dim that varies with the batch without being equal
/// to it (e.g. batch × 3 after reshaping `[BATCH, 3, 4]` to `[-1, 4]`).
pub const BATCH_DEPENDENT: i64 = sys::FM_BATCH_DEPENDENT as i64;

/// An op of the C ABI (see `fm_op` in `ferrometal.h`), for [`Graph::op`].
pub type Op = sys::fm_op;

/// A graph under construction. Building is single-threaded (the graph is
/// `Send`, not `Sync`); values are small `Copy` handles into it.
pub struct Graph {
    handle: OwnedHandle,
}

// SAFETY: the C ABI lets a graph be built by one thread at a time, from any
// thread; Graph is therefore Send but not Sync.
unsafe impl Send for Graph {}

/// A value of a graph: an input, a variable, a constant or an op's result.
#[derive(Clone, Copy)]
pub struct Value<'g> {
    graph: &'g Graph,
    raw: u64,
}

impl std::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.dtype(), self.shape()) {
            (Ok(dtype), Ok(shape)) => write!(f, "Value<{dtype}>{shape:?}"),
            _ => write!(f, "Value({:#x})", self.raw),
        }
    }
}

impl<'g> Value<'g> {
    /// The raw `fm_value`.
    pub fn as_raw(self) -> u64 {
        self.raw
    }

    fn info(self) -> Result<(DType, Vec<i64>)> {
        let mut dtype = 0;
        let mut dims = [0i64; sys::FM_MAX_RANK as usize];
        let mut rank = 0;
        // SAFETY: out_dims has FM_MAX_RANK entries; handles are checked.
        check(unsafe {
            sys::fm_graph_value_info(
                &mut dtype,
                dims.as_mut_ptr(),
                &mut rank,
                self.graph.as_raw(),
                self.raw,
            )
        })?;
        Ok((DType::from_sys(dtype)?, dims[..rank].to_vec()))
    }

    /// The shape, with [`BATCH`] where a dim is the batch and
    /// [`BATCH_DEPENDENT`] where it otherwise depends on it.
    pub fn shape(self) -> Result<Vec<i64>> {
        Ok(self.info()?.1)
    }

    /// The element type.
    pub fn dtype(self) -> Result<DType> {
        Ok(self.info()?.0)
    }
}

/// How a variable gets its first value (PyTorch's fans for Xavier and He).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Init {
    /// All zeros.
    Zeros,
    /// Every element the same.
    Constant(f64),
    /// Uniform in [low, high).
    #[allow(missing_docs)]
    Uniform { low: f64, high: f64, seed: u64 },
    /// Normal.
    #[allow(missing_docs)]
    Normal { mean: f64, std: f64, seed: u64 },
    /// Glorot uniform.
    #[allow(missing_docs)]
    XavierUniform { seed: u64 },
    /// Glorot normal.
    #[allow(missing_docs)]
    XavierNormal { seed: u64 },
    /// Kaiming uniform (for ReLU).
    #[allow(missing_docs)]
    HeUniform { seed: u64 },
    /// Kaiming normal (for ReLU).
    #[allow(missing_docs)]
    HeNormal { seed: u64 },
}

impl Init {
    fn to_sys(&self) -> sys::fm_init {
        // SAFETY: fm_init_default has no preconditions.
        let mut init = unsafe { sys::fm_init_default() };
        match *self {
            Init::Zeros => init.kind = sys::FM_INIT_ZEROS,
            Init::Constant(value) => (init.kind, init.value) = (sys::FM_INIT_CONSTANT, value),
            Init::Uniform { low, high, seed } => {
                (init.kind, init.low, init.high, init.seed) =
                    (sys::FM_INIT_UNIFORM, low, high, seed)
            }
            Init::Normal { mean, std, seed } => {
                (init.kind, init.mean, init.std, init.seed) = (sys::FM_INIT_NORMAL, mean, std, seed)
            }
            Init::XavierUniform { seed } => {
                (init.kind, init.seed) = (sys::FM_INIT_XAVIER_UNIFORM, seed)
            }
            Init::XavierNormal { seed } => {
                (init.kind, init.seed) = (sys::FM_INIT_XAVIER_NORMAL, seed)
            }
            Init::HeUniform { seed } => (init.kind, init.seed) = (sys::FM_INIT_HE_UNIFORM, seed),
            Init::HeNormal { seed } => (init.kind, init.seed) = (sys::FM_INIT_HE_NORMAL, seed),
        }
        init
    }
}

/// Attributes of an op; start from `Attrs::default()` (the C defaults) and
/// set what the op reads (see `fm_op` in the header).
#[derive(Clone, Copy)]
pub struct Attrs(pub sys::fm_op_attrs);

impl Default for Attrs {
    fn default() -> Attrs {
        // SAFETY: no preconditions.
        Attrs(unsafe { sys::fm_op_attrs_default() })
    }
}

impl Attrs {
    /// Sets `axes` (at most FM_MAX_RANK are used).
    pub fn axes(mut self, axes: &[i64]) -> Attrs {
        let n = axes.len().min(sys::FM_MAX_RANK as usize);
        self.0.axes[..n].copy_from_slice(&axes[..n]);
        self.0.num_axes = axes.len();
        self
    }
    /// Sets `shape`.
    pub fn shape(mut self, shape: &[i64]) -> Attrs {
        let n = shape.len().min(sys::FM_MAX_RANK as usize);
        self.0.shape[..n].copy_from_slice(&shape[..n]);
        self.0.rank = shape.len();
        self
    }
    /// Sets `keep_dims`.
    pub fn keep_dims(mut self, keep: bool) -> Attrs {
        self.0.keep_dims = keep as i32;
        self
    }
}

/// Options of a 2-D convolution (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Step of the window (height, width).
    pub stride: [i64; 2],
    /// Zeros added on each side.
    pub padding: [i64; 2],
    /// Spacing of the kernel taps.
    pub dilation: [i64; 2],
    /// Channel groups.
    pub groups: i64,
    /// Extra output size (transposed convolution only).
    pub output_padding: [i64; 2],
}

impl Default for Conv2d {
    fn default() -> Conv2d {
        Conv2d {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            output_padding: [0, 0],
        }
    }
}

impl Conv2d {
    fn attrs(&self) -> Attrs {
        let mut a = Attrs::default();
        a.0.stride = self.stride;
        a.0.padding = self.padding;
        a.0.dilation = self.dilation;
        a.0.groups = self.groups;
        a.0.output_padding = self.output_padding;
        a
    }
}

/// Options of 2-D pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Window size.
    pub kernel: [i64; 2],
    /// Step; `[0, 0]` means the kernel size.
    pub stride: [i64; 2],
    /// Padding on each side (-inf for max, zeros for average).
    pub padding: [i64; 2],
    /// Spacing of the window (max pooling).
    pub dilation: [i64; 2],
    /// Whether average pooling divides by the padded window size.
    pub count_include_pad: bool,
}

impl Pool2d {
    /// A `k` x `k` window with stride `k`.
    pub fn square(k: i64) -> Pool2d {
        Pool2d {
            kernel: [k, k],
            stride: [0, 0],
            padding: [0, 0],
            dilation: [1, 1],
            count_include_pad: true,
        }
    }

    fn attrs(&self) -> Attrs {
        let mut a = Attrs::default();
        a.0.kernel_size = self.kernel;
        a.0.stride = self.stride;
        a.0.padding = self.padding;
        a.0.dilation = self.dilation;
        a.0.count_include_pad = self.count_include_pad as i32;
        a
    }
}

/// How a loss reduces over elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over the batch (or all elements for elementwise losses).
    #[default]
    Mean,
    /// Sum.
    Sum,
}

/// Optimizer settings with PyTorch's meanings and defaults.
#[derive(Clone, Copy)]
pub struct Optimizer(pub sys::fm_optimizer);

macro_rules! optimizer_kind {
    ($(#[$doc:meta] $name:ident => $kind:ident),* $(,)?) => {$(
        #[$doc]
        pub fn $name(learning_rate: f64) -> Optimizer {
            // SAFETY: no preconditions.
            let mut o = unsafe { sys::fm_optimizer_default(sys::$kind) };
            o.learning_rate = learning_rate;
            Optimizer(o)
        }
    )*};
}

macro_rules! optimizer_setter {
    ($(#[$doc:meta] $name:ident: $field:ident as $ty:ty),* $(,)?) => {$(
        #[$doc]
        pub fn $name(mut self, value: $ty) -> Optimizer {
            self.0.$field = value.into();
            self
        }
    )*};
}

impl Optimizer {
    optimizer_kind! {
        /// Stochastic gradient descent.
        sgd => FM_OPTIMIZER_SGD,
        /// Adam.
        adam => FM_OPTIMIZER_ADAM,
        /// AdamW (decoupled weight decay, 0.01 by default).
        adamw => FM_OPTIMIZER_ADAMW,
        /// RMSProp.
        rmsprop => FM_OPTIMIZER_RMSPROP,
        /// AdaGrad.
        adagrad => FM_OPTIMIZER_ADAGRAD,
        /// AdaDelta.
        adadelta => FM_OPTIMIZER_ADADELTA,
        /// Nadam.
        nadam => FM_OPTIMIZER_NADAM,
    }
    optimizer_setter! {
        /// Momentum (SGD, RMSProp).
        momentum: momentum as f64,
        /// Dampening (SGD).
        dampening: dampening as f64,
        /// Weight decay (decoupled for AdamW, L2 otherwise).
        weight_decay: weight_decay as f64,
        /// Epsilon.
        eps: eps as f64,
        /// First moment decay.
        beta1: beta1 as f64,
        /// Second moment decay.
        beta2: beta2 as f64,
        /// RMSProp smoothing constant.
        alpha: alpha as f64,
        /// AdaDelta decay.
        rho: rho as f64,
        /// AdaGrad starting accumulator.
        initial_accumulator: initial_accumulator as f64,
        /// Nadam momentum decay.
        momentum_decay: momentum_decay as f64,
        /// Clip each gradient element to [-value, value] (0: off).
        clip_value: clip_value as f64,
        /// Scale gradients so their global norm is at most this (0: off).
        clip_norm: clip_norm as f64,
    }
    /// Nesterov momentum (SGD).
    pub fn nesterov(mut self, on: bool) -> Optimizer {
        self.0.nesterov = on as i32;
        self
    }
    /// Centered RMSProp.
    pub fn centered(mut self, on: bool) -> Optimizer {
        self.0.centered = on as i32;
        self
    }
}

macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self, x: Value<'_>) -> Result<Value<'_>> {
            self.op(sys::$op, &[x], &Attrs::default())
        }
    )*};
}

macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self, a: Value<'_>, b: Value<'_>) -> Result<Value<'_>> {
            self.op(sys::$op, &[a, b], &Attrs::default())
        }
    )*};
}

macro_rules! loss_ops {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self, predictions: Value<'_>, targets: Value<'_>) -> Result<Value<'_>> {
            self.loss(sys::$op, predictions, targets, Attrs::default(), Reduction::Mean)
        }
    )*};
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Result<Graph> {
        let mut raw = 0;
        // SAFETY: valid out-pointer.
        check(unsafe { sys::fm_graph_new(&mut raw) })?;
        // SAFETY: a new reference we now own.
        Ok(Graph {
            handle: unsafe { OwnedHandle::from_raw(raw) },
        })
    }

    /// The raw `fm_graph` handle, borrowed.
    pub fn as_raw(&self) -> usize {
        self.handle.raw()
    }

    fn value(&self, raw: u64) -> Value<'_> {
        Value { graph: self, raw }
    }

    fn own<'a>(&self, values: &[Value<'a>]) -> Result<Vec<u64>> {
        values
            .iter()
            .map(|v| {
                if std::ptr::eq(v.graph, self) {
                    Ok(v.raw)
                } else {
                    Err(Error::InvalidArgument(
                        "a value of another graph was passed".into(),
                    ))
                }
            })
            .collect()
    }

    /// Any op of the C ABI with explicit attributes.
    pub fn op<'a>(&'a self, op: Op, inputs: &[Value<'_>], attrs: &Attrs) -> Result<Value<'a>> {
        let raw_inputs = self.own(inputs)?;
        let mut out = 0;
        // SAFETY: inputs has num_inputs entries; attrs is a valid struct.
        check(unsafe {
            sys::fm_graph_op(
                &mut out,
                self.as_raw(),
                op,
                raw_inputs.as_ptr(),
                raw_inputs.len(),
                &attrs.0,
            )
        })?;
        Ok(self.value(out))
    }

    /// An input fed at each run; `shape[0]` may be [`BATCH`].
    pub fn placeholder(&self, name: &str, dtype: DType, shape: &[i64]) -> Result<Value<'_>> {
        let name = c_name(name)?;
        let mut out = 0;
        // SAFETY: NUL-terminated name; shape has rank entries.
        check(unsafe {
            sys::fm_graph_placeholder(
                &mut out,
                self.as_raw(),
                name.as_ptr(),
                dtype.to_sys(),
                shape.as_ptr(),
                shape.len(),
            )
        })?;
        Ok(self.value(out))
    }

    /// An f32 parameter, initialised by `init`.
    pub fn variable(&self, name: &str, shape: &[usize], init: Init) -> Result<Value<'_>> {
        self.raw_variable(name, DType::F32, shape, init.to_sys())
    }

    /// A parameter initialised from `data` (row-major).
    pub fn variable_from<T: Element>(
        &self,
        name: &str,
        shape: &[usize],
        data: &[T],
    ) -> Result<Value<'_>> {
        check_count("Graph::variable_from", shape, data.len())?;
        // SAFETY: no preconditions.
        let mut init = unsafe { sys::fm_init_default() };
        init.kind = sys::FM_INIT_DATA;
        init.data = data.as_ptr().cast();
        self.raw_variable(name, T::DTYPE, shape, init)
    }

    fn raw_variable(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        init: sys::fm_init,
    ) -> Result<Value<'_>> {
        let name = c_name(name)?;
        let dims = dims(shape);
        let mut out = 0;
        // SAFETY: NUL-terminated name; dims has rank entries; init.data (if
        // any) holds the whole variable and is copied during the call.
        check(unsafe {
            sys::fm_graph_variable(
                &mut out,
                self.as_raw(),
                name.as_ptr(),
                dtype.to_sys(),
                dims.as_ptr(),
                dims.len(),
                &init,
            )
        })?;
        Ok(self.value(out))
    }

    /// A constant holding a copy of `data`.
    pub fn constant<T: Element>(&self, shape: &[usize], data: &[T]) -> Result<Value<'_>> {
        check_count("Graph::constant", shape, data.len())?;
        let dims = dims(shape);
        let mut out = 0;
        // SAFETY: data holds the product of the shape elements.
        check(unsafe {
            sys::fm_graph_constant(
                &mut out,
                self.as_raw(),
                T::DTYPE.to_sys(),
                dims.as_ptr(),
                dims.len(),
                data.as_ptr().cast(),
            )
        })?;
        Ok(self.value(out))
    }

    /// An f32 scalar constant.
    pub fn scalar(&self, value: f64) -> Result<Value<'_>> {
        let mut out = 0;
        // SAFETY: valid out-pointer.
        check(unsafe { sys::fm_graph_scalar(&mut out, self.as_raw(), value) })?;
        Ok(self.value(out))
    }

    unary_ops! {
        /// -x
        neg => FM_OP_NEG, /// |x|
        abs => FM_OP_ABS, /// e^x
        exp => FM_OP_EXP, /// ln x
        log => FM_OP_LOG, /// √x
        sqrt => FM_OP_SQRT, /// 1/√x
        rsqrt => FM_OP_RSQRT, /// max(x, 0)
        relu => FM_OP_RELU, /// 1/(1+e^-x)
        sigmoid => FM_OP_SIGMOID, /// tanh x
        tanh => FM_OP_TANH, /// x·sigmoid(x)
        silu => FM_OP_SILU, /// ln(1+e^x)
        softplus => FM_OP_SOFTPLUS, /// [n, c, h, w] → [n, c]
        global_avg_pool => FM_OP_GLOBAL_AVG_POOL, /// [d0, d1, ...] → [d0, d1·...]
        flatten => FM_OP_FLATTEN, /// Identity with zero gradient.
        stop_gradient => FM_OP_STOP_GRADIENT,
    }

    binary_ops! {
        /// a + b (broadcasting)
        add => FM_OP_ADD, /// a - b
        sub => FM_OP_SUB, /// a · b
        mul => FM_OP_MUL, /// a / b
        div => FM_OP_DIV, /// max(a, b)
        maximum => FM_OP_MAXIMUM, /// min(a, b)
        minimum => FM_OP_MINIMUM, /// 1 where a == b
        equal => FM_OP_EQUAL, /// 1 where a != b
        not_equal => FM_OP_NOT_EQUAL, /// 1 where a < b
        less => FM_OP_LESS, /// 1 where a <= b
        less_equal => FM_OP_LESS_EQUAL, /// 1 where a > b
        greater => FM_OP_GREATER, /// 1 where a >= b
        greater_equal => FM_OP_GREATER_EQUAL, /// a · b over the last two dims
        matmul => FM_OP_MATMUL, /// Rows of `table` picked by i32 `indices`.
        embedding => FM_OP_EMBEDDING, /// At the end of the run, `variable` takes `value`.
        assign => FM_OP_ASSIGN,
    }

    loss_ops! {
        /// Mean squared error.
        mse => FM_OP_MSE, /// Mean absolute error.
        mae => FM_OP_MAE, /// Binary cross-entropy on probabilities.
        binary_cross_entropy => FM_OP_BINARY_CROSS_ENTROPY, /// Binary cross-entropy on logits.
        bce_with_logits => FM_OP_BCE_WITH_LOGITS, /// Cross-entropy on probabilities.
        categorical_cross_entropy => FM_OP_CATEGORICAL_CROSS_ENTROPY,
    }

    fn with<'a>(
        &'a self,
        op: Op,
        inputs: &[Value<'_>],
        set: impl FnOnce(&mut sys::fm_op_attrs),
    ) -> Result<Value<'a>> {
        let mut attrs = Attrs::default();
        set(&mut attrs.0);
        self.op(op, inputs, &attrs)
    }

    /// A loss with an explicit reduction and attributes.
    pub fn loss<'a>(
        &'a self,
        op: Op,
        predictions: Value<'_>,
        targets: Value<'_>,
        mut attrs: Attrs,
        reduction: Reduction,
    ) -> Result<Value<'a>> {
        attrs.0.reduction = match reduction {
            Reduction::Mean => sys::FM_REDUCTION_MEAN,
            Reduction::Sum => sys::FM_REDUCTION_SUM,
        };
        self.op(op, &[predictions, targets], &attrs)
    }

    /// x^exponent
    pub fn pow(&self, x: Value<'_>, exponent: f64) -> Result<Value<'_>> {
        self.with(sys::FM_OP_POW, &[x], |a| a.exponent = exponent)
    }
    /// x clamped to [min, max].
    pub fn clamp(&self, x: Value<'_>, min: f64, max: f64) -> Result<Value<'_>> {
        self.with(sys::FM_OP_CLAMP, &[x], |a| (a.min, a.max) = (min, max))
    }
    /// x > 0 ? x : slope·x
    pub fn leaky_relu(&self, x: Value<'_>, slope: f64) -> Result<Value<'_>> {
        self.with(sys::FM_OP_LEAKY_RELU, &[x], |a| a.slope = slope)
    }
    /// x > 0 ? x : alpha·(e^x - 1)
    pub fn elu(&self, x: Value<'_>, alpha: f64) -> Result<Value<'_>> {
        self.with(sys::FM_OP_ELU, &[x], |a| a.alpha = alpha)
    }
    /// GELU; `approximate` picks the tanh form.
    pub fn gelu(&self, x: Value<'_>, approximate: bool) -> Result<Value<'_>> {
        self.with(sys::FM_OP_GELU, &[x], |a| {
            a.approximate = approximate as i32
        })
    }
    /// condition != 0 ? a : b
    pub fn where_(&self, condition: Value<'_>, a: Value<'_>, b: Value<'_>) -> Result<Value<'_>> {
        self.op(sys::FM_OP_WHERE, &[condition, a, b], &Attrs::default())
    }
    /// Softmax along `axis`.
    pub fn softmax(&self, x: Value<'_>, axis: i64) -> Result<Value<'_>> {
        self.op(sys::FM_OP_SOFTMAX, &[x], &Attrs::default().axes(&[axis]))
    }
    /// Log-softmax along `axis`.
    pub fn log_softmax(&self, x: Value<'_>, axis: i64) -> Result<Value<'_>> {
        self.op(
            sys::FM_OP_LOG_SOFTMAX,
            &[x],
            &Attrs::default().axes(&[axis]),
        )
    }
    /// a·b with either operand's last two dims transposed first.
    pub fn matmul_t(
        &self,
        a: Value<'_>,
        b: Value<'_>,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Value<'_>> {
        self.with(sys::FM_OP_MATMUL, &[a, b], |at| {
            (at.transpose_a, at.transpose_b) = (transpose_a as i32, transpose_b as i32)
        })
    }
    /// x·weightᵀ + bias.
    pub fn linear<'a>(
        &'a self,
        x: Value<'_>,
        weight: Value<'_>,
        bias: Option<Value<'_>>,
    ) -> Result<Value<'a>> {
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        self.op(sys::FM_OP_LINEAR, &inputs, &Attrs::default())
    }
    /// 2-D convolution (NCHW; weight [out, in/groups, kh, kw]).
    pub fn conv2d<'a>(
        &'a self,
        x: Value<'_>,
        weight: Value<'_>,
        bias: Option<Value<'_>>,
        options: &Conv2d,
    ) -> Result<Value<'a>> {
        self.convolution(sys::FM_OP_CONV2D, x, weight, bias, options)
    }
    /// Transposed 2-D convolution (weight [in, out/groups, kh, kw]).
    pub fn conv_transpose2d<'a>(
        &'a self,
        x: Value<'_>,
        weight: Value<'_>,
        bias: Option<Value<'_>>,
        options: &Conv2d,
    ) -> Result<Value<'a>> {
        self.convolution(sys::FM_OP_CONV_TRANSPOSE2D, x, weight, bias, options)
    }
    fn convolution<'a>(
        &'a self,
        op: Op,
        x: Value<'_>,
        weight: Value<'_>,
        bias: Option<Value<'_>>,
        options: &Conv2d,
    ) -> Result<Value<'a>> {
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        self.op(op, &inputs, &options.attrs())
    }
    /// Max pooling.
    pub fn max_pool2d(&self, x: Value<'_>, options: &Pool2d) -> Result<Value<'_>> {
        self.op(sys::FM_OP_MAX_POOL2D, &[x], &options.attrs())
    }
    /// Average pooling.
    pub fn avg_pool2d(&self, x: Value<'_>, options: &Pool2d) -> Result<Value<'_>> {
        self.op(sys::FM_OP_AVG_POOL2D, &[x], &options.attrs())
    }
    /// To `shape` (one dim may be -1).
    pub fn reshape(&self, x: Value<'_>, shape: &[i64]) -> Result<Value<'_>> {
        self.op(sys::FM_OP_RESHAPE, &[x], &Attrs::default().shape(shape))
    }
    /// Dims reordered: output dim i is input dim `axes[i]`.
    pub fn permute(&self, x: Value<'_>, axes: &[i64]) -> Result<Value<'_>> {
        self.op(sys::FM_OP_PERMUTE, &[x], &Attrs::default().axes(axes))
    }
    /// Dims `a` and `b` swapped.
    pub fn transpose(&self, x: Value<'_>, a: i64, b: i64) -> Result<Value<'_>> {
        self.op(sys::FM_OP_TRANSPOSE, &[x], &Attrs::default().axes(&[a, b]))
    }
    /// Inputs joined along `axis`.
    pub fn concat<'a>(&'a self, inputs: &[Value<'_>], axis: i64) -> Result<Value<'a>> {
        self.op(sys::FM_OP_CONCAT, inputs, &Attrs::default().axes(&[axis]))
    }
    /// Elements [start, end) along `axis` (negative counts from the end).
    pub fn slice(&self, x: Value<'_>, axis: i64, start: i64, end: i64) -> Result<Value<'_>> {
        self.with(sys::FM_OP_SLICE, &[x], |a| {
            (a.num_axes, a.axes[0], a.starts[0], a.ends[0]) = (1, axis, start, end);
        })
    }
    /// `padding[d] = (before, after)` elements of `value` around each dim d.
    pub fn pad(&self, x: Value<'_>, padding: &[(i64, i64)], value: f64) -> Result<Value<'_>> {
        self.with(sys::FM_OP_PAD, &[x], |a| {
            for (d, &(before, after)) in padding.iter().enumerate().take(sys::FM_MAX_RANK as usize)
            {
                (a.pad_before[d], a.pad_after[d]) = (before, after);
            }
            a.value = value;
        })
    }
    /// Broadcast to `shape`.
    pub fn broadcast_to(&self, x: Value<'_>, shape: &[i64]) -> Result<Value<'_>> {
        self.op(
            sys::FM_OP_BROADCAST_TO,
            &[x],
            &Attrs::default().shape(shape),
        )
    }
    /// Size-1 dims `axes` removed (all size-1 dims when empty).
    pub fn squeeze(&self, x: Value<'_>, axes: &[i64]) -> Result<Value<'_>> {
        self.op(sys::FM_OP_SQUEEZE, &[x], &Attrs::default().axes(axes))
    }
    /// Size-1 dims inserted at `axes` of the output.
    pub fn unsqueeze(&self, x: Value<'_>, axes: &[i64]) -> Result<Value<'_>> {
        self.op(sys::FM_OP_UNSQUEEZE, &[x], &Attrs::default().axes(axes))
    }
    /// Sum over `axes` (all when empty).
    pub fn sum(&self, x: Value<'_>, axes: &[i64], keep_dims: bool) -> Result<Value<'_>> {
        self.reduce(sys::FM_OP_SUM, x, axes, keep_dims)
    }
    /// Mean over `axes` (all when empty).
    pub fn mean(&self, x: Value<'_>, axes: &[i64], keep_dims: bool) -> Result<Value<'_>> {
        self.reduce(sys::FM_OP_MEAN, x, axes, keep_dims)
    }
    /// Maximum over `axes`.
    pub fn max(&self, x: Value<'_>, axes: &[i64], keep_dims: bool) -> Result<Value<'_>> {
        self.reduce(sys::FM_OP_MAX, x, axes, keep_dims)
    }
    /// Minimum over `axes`.
    pub fn min(&self, x: Value<'_>, axes: &[i64], keep_dims: bool) -> Result<Value<'_>> {
        self.reduce(sys::FM_OP_MIN, x, axes, keep_dims)
    }
    fn reduce(&self, op: Op, x: Value<'_>, axes: &[i64], keep_dims: bool) -> Result<Value<'_>> {
        self.op(op, &[x], &Attrs::default().axes(axes).keep_dims(keep_dims))
    }
    /// Variance over `axes` with `correction` (0 population, 1 sample).
    pub fn variance(
        &self,
        x: Value<'_>,
        axes: &[i64],
        correction: i32,
        keep_dims: bool,
    ) -> Result<Value<'_>> {
        let mut attrs = Attrs::default().axes(axes).keep_dims(keep_dims);
        attrs.0.correction = correction;
        self.op(sys::FM_OP_VARIANCE, &[x], &attrs)
    }
    /// Index (i32) of the first maximum along `axis`.
    pub fn argmax(&self, x: Value<'_>, axis: i64) -> Result<Value<'_>> {
        self.op(sys::FM_OP_ARGMAX, &[x], &Attrs::default().axes(&[axis]))
    }
    /// Batch normalisation over dim 1 (running statistics must be variables).
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm<'a>(
        &'a self,
        x: Value<'_>,
        gamma: Value<'_>,
        beta: Value<'_>,
        running_mean: Value<'_>,
        running_var: Value<'_>,
        momentum: f64,
        eps: f64,
        training: bool,
    ) -> Result<Value<'a>> {
        self.with(
            sys::FM_OP_BATCH_NORM,
            &[x, gamma, beta, running_mean, running_var],
            |a| {
                (a.momentum, a.eps, a.training) = (momentum, eps, training as i32);
            },
        )
    }
    /// Layer normalisation over the last `normalized_rank` dims.
    pub fn layer_norm<'a>(
        &'a self,
        x: Value<'_>,
        gamma: Value<'_>,
        beta: Value<'_>,
        normalized_rank: i64,
        eps: f64,
    ) -> Result<Value<'a>> {
        self.with(sys::FM_OP_LAYER_NORM, &[x, gamma, beta], |a| {
            (a.normalized_rank, a.eps) = (normalized_rank, eps)
        })
    }
    /// Dropout with probability `p`; identity when not training.
    pub fn dropout(&self, x: Value<'_>, p: f64, seed: u64, training: bool) -> Result<Value<'_>> {
        self.with(sys::FM_OP_DROPOUT, &[x], |a| {
            (a.p, a.seed, a.training) = (p, seed, training as i32)
        })
    }
    /// f32 one-hot vectors of `depth` for i32 indices.
    pub fn one_hot(&self, indices: Value<'_>, depth: i64) -> Result<Value<'_>> {
        self.with(sys::FM_OP_ONE_HOT, &[indices], |a| a.depth = depth)
    }
    /// Softmax cross-entropy of logits [n, c] against i32 labels [n].
    pub fn softmax_cross_entropy<'a>(
        &'a self,
        logits: Value<'_>,
        labels: Value<'_>,
        label_smoothing: f64,
        reduction: Reduction,
    ) -> Result<Value<'a>> {
        let mut attrs = Attrs::default();
        attrs.0.label_smoothing = label_smoothing;
        self.loss(
            sys::FM_OP_SOFTMAX_CROSS_ENTROPY,
            logits,
            labels,
            attrs,
            reduction,
        )
    }
    /// Huber loss with `delta`.
    pub fn huber<'a>(
        &'a self,
        predictions: Value<'_>,
        targets: Value<'_>,
        delta: f64,
    ) -> Result<Value<'a>> {
        let mut attrs = Attrs::default();
        attrs.0.delta = delta;
        self.loss(
            sys::FM_OP_HUBER,
            predictions,
            targets,
            attrs,
            Reduction::Mean,
        )
    }
    /// A token that computes all `values` when fetched.
    pub fn group<'a>(&'a self, values: &[Value<'_>]) -> Result<Value<'a>> {
        self.op(sys::FM_OP_GROUP, values, &Attrs::default())
    }

    /// Gradients of scalar `loss` with respect to each of `wrt`.
    pub fn gradients<'a>(&'a self, loss: Value<'_>, wrt: &[Value<'_>]) -> Result<Vec<Value<'a>>> {
        let loss = self.own(&[loss])?[0];
        let wrt = self.own(wrt)?;
        let mut out = vec![0u64; wrt.len()];
        // SAFETY: out has room for wrt.len() values.
        check(unsafe {
            sys::fm_graph_gradients(
                out.as_mut_ptr(),
                self.as_raw(),
                loss,
                wrt.as_ptr(),
                wrt.len(),
            )
        })?;
        Ok(out.into_iter().map(|raw| self.value(raw)).collect())
    }

    /// The update of each (variable, gradient); fetch the result to step.
    pub fn optimizer<'a>(
        &'a self,
        optimizer: &Optimizer,
        pairs: &[(Value<'_>, Value<'_>)],
    ) -> Result<Value<'a>> {
        self.optimizer_with_prefix(optimizer, pairs, "optimizer.")
    }

    /// As [`Graph::optimizer`], naming its variables `<prefix>lr`, ...
    pub fn optimizer_with_prefix<'a>(
        &'a self,
        optimizer: &Optimizer,
        pairs: &[(Value<'_>, Value<'_>)],
        prefix: &str,
    ) -> Result<Value<'a>> {
        let variables = self.own(&pairs.iter().map(|p| p.0).collect::<Vec<_>>())?;
        let gradients = self.own(&pairs.iter().map(|p| p.1).collect::<Vec<_>>())?;
        let prefix = c_name(prefix)?;
        let mut out = 0;
        // SAFETY: both arrays have pairs.len() entries; prefix is NUL-terminated.
        check(unsafe {
            sys::fm_graph_optimizer(
                &mut out,
                self.as_raw(),
                &optimizer.0,
                variables.as_ptr(),
                gradients.as_ptr(),
                variables.len(),
                prefix.as_ptr(),
            )
        })?;
        Ok(self.value(out))
    }

    /// Every variable with its name, in creation order.
    pub fn variables(&self) -> Result<Vec<(String, Value<'_>)>> {
        let mut count = 0;
        // SAFETY: valid out-pointer.
        check(unsafe { sys::fm_graph_variable_count(&mut count, self.as_raw()) })?;
        (0..count)
            .map(|i| {
                let (mut raw, mut name) = (0, std::ptr::null());
                // SAFETY: valid out-pointers; the name lives as long as the graph.
                check(unsafe { sys::fm_graph_variable_at(&mut raw, &mut name, self.as_raw(), i) })?;
                // SAFETY: a NUL-terminated string owned by the graph, copied now.
                let name = unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned();
                Ok((name, self.value(raw)))
            })
            .collect()
    }

    /// Binds the graph to `device`, allocating and initialising its variables.
    pub fn compile(&self, device: &Device) -> Result<Exec> {
        let mut raw = 0;
        // SAFETY: valid out-pointer and live handles.
        check(unsafe { sys::fm_graph_compile(&mut raw, self.as_raw(), device.as_raw()) })?;
        // SAFETY: a new reference we now own.
        Ok(Exec {
            handle: unsafe { OwnedHandle::from_raw(raw) },
            device: device.clone(),
        })
    }
}

fn c_name(name: &str) -> Result<CString> {
    CString::new(name)
        .map_err(|_| Error::InvalidArgument(format!("name {name:?} contains a NUL byte")))
}

fn check_count(what: &str, shape: &[usize], len: usize) -> Result<()> {
    let count: usize = shape.iter().product();
    if count == len {
        Ok(())
    } else {
        Err(Error::ShapeMismatch(format!(
            "{what}: shape {shape:?} has {count} elements, data has {len}"
        )))
    }
}

macro_rules! operator {
    ($trait:ident, $method:ident, $graph_method:ident) => {
        impl<'g> std::ops::$trait for Value<'g> {
            type Output = Result<Value<'g>>;
            fn $method(self, rhs: Value<'g>) -> Result<Value<'g>> {
                self.graph.$graph_method(self, rhs)
            }
        }
    };
}
operator!(Add, add, add);
operator!(Sub, sub, sub);
operator!(Mul, mul, mul);
operator!(Div, div, div);

impl<'g> std::ops::Neg for Value<'g> {
    type Output = Result<Value<'g>>;
    fn neg(self) -> Result<Value<'g>> {
        self.graph.neg(self)
    }
}

/// A graph compiled for a device: owns the variables (which stay on the
/// device between runs) and one plan per feed shapes and fetches.
pub struct Exec {
    handle: OwnedHandle,
    device: Device,
}

// SAFETY: the C ABI lets an executable be run by one thread at a time, from
// any thread; every method takes `&mut self` or only reads metadata.
unsafe impl Send for Exec {}

impl Exec {
    pub(crate) fn adopt(handle: OwnedHandle, device: &Device) -> Exec {
        Exec {
            handle,
            device: device.clone(),
        }
    }

    /// Runs once: feeds placeholders, returns one tensor per fetch, and does
    /// the assignments (optimizer steps) the fetched values depend on.
    pub fn run(
        &mut self,
        feeds: &[(Value<'_>, &Tensor)],
        fetches: &[Value<'_>],
    ) -> Result<Vec<Tensor>> {
        let raw_feeds: Vec<sys::fm_feed> = feeds
            .iter()
            .map(|(v, t)| sys::fm_feed {
                placeholder: v.raw,
                tensor: t.as_raw(),
            })
            .collect();
        let raw_fetches: Vec<u64> = fetches.iter().map(|v| v.raw).collect();
        let mut out = vec![0usize; fetches.len()];
        // SAFETY: arrays sized as passed; out receives one new reference each.
        check(unsafe {
            sys::fm_exec_run(
                self.handle.raw(),
                raw_feeds.as_ptr(),
                raw_feeds.len(),
                raw_fetches.as_ptr(),
                raw_fetches.len(),
                out.as_mut_ptr(),
                0,
            )
        })?;
        out.into_iter()
            .map(|raw| Tensor::adopt(raw, &self.device))
            .collect()
    }

    /// Waits for the runs so far and returns the data error one of them
    /// found ([`Error::OutOfRange`] for an index or label out of range).
    ///
    /// On a GPU, [`run`](Exec::run) returns once the run is queued and its
    /// feeds consumed; an index out of range found by the device makes that
    /// run skip its assignments, and is reported here or by the next run.
    /// On the CPU, `run` reports it itself and this returns `Ok`.
    pub fn synchronize(&mut self) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::fm_exec_synchronize(self.handle.raw()) })
    }

    /// The shape of variable `name`.
    pub fn variable_shape(&self, name: &str) -> Result<Vec<usize>> {
        let c = c_name(name)?;
        let mut dims = [0i64; sys::FM_MAX_RANK as usize];
        let mut rank = 0;
        // SAFETY: dims has FM_MAX_RANK entries.
        check(unsafe {
            sys::fm_exec_variable_shape(dims.as_mut_ptr(), &mut rank, self.handle.raw(), c.as_ptr())
        })?;
        Ok(dims[..rank].iter().map(|&d| d as usize).collect())
    }

    /// Copies variable `name` (f32) to the host.
    pub fn read_variable(&self, name: &str) -> Result<Vec<f32>> {
        let count = self.variable_shape(name)?.iter().product();
        let c = c_name(name)?;
        let mut out = vec![0.0f32; count];
        // SAFETY: out holds `count` f32 elements.
        check(unsafe {
            sys::fm_exec_read_variable(
                self.handle.raw(),
                c.as_ptr(),
                out.as_mut_ptr().cast(),
                count,
            )
        })?;
        Ok(out)
    }

    /// Overwrites variable `name` (f32) from `data`.
    pub fn write_variable(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let c = c_name(name)?;
        // SAFETY: data holds data.len() f32 elements.
        check(unsafe {
            sys::fm_exec_write_variable(
                self.handle.raw(),
                c.as_ptr(),
                data.as_ptr().cast(),
                data.len(),
            )
        })
    }

    /// Runs so far (seeds dropout masks).
    pub fn run_count(&self) -> Result<u64> {
        let mut count = 0;
        // SAFETY: valid out-pointer.
        check(unsafe { sys::fm_exec_run_count(&mut count, self.handle.raw()) })?;
        Ok(count)
    }

    /// Restores the run counter (with the variables, a resumed run repeats).
    pub fn set_run_count(&mut self, count: u64) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::fm_exec_set_run_count(self.handle.raw(), count) })
    }

    /// (bytes after buffer reuse, bytes without) of the last run's plan.
    pub fn planned_memory(&self) -> Result<(u64, u64)> {
        let (mut peak, mut unshared) = (0, 0);
        // SAFETY: valid out-pointers.
        check(unsafe { sys::fm_exec_planned_memory(&mut peak, &mut unshared, self.handle.raw()) })?;
        Ok((peak, unshared))
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}
