//! The conformance harness.
//!
//! [`OpTest`] builds a graph with one placeholder per input, applies the op
//! under test, compiles it on a device and runs it, then checks:
//!
//! - FORWARD: every output element against a float64 reference written in
//!   the test (plain loops, never the library), within [`Tol`];
//! - GRADIENT: for loss = sum(op(x...) * R) with a fixed pseudo-random
//!   constant R, the gradient of every differentiable input (from
//!   `g.gradients`) against central finite differences of the float64
//!   reference (h = 1e-6 in f64, so the reference is exact to ~1e-9),
//!   within `1e-4 * |want| + 1e-5`.
//!
//! Inputs are f32 in the graph; the reference sees the same f32-rounded
//! values in f64. i32 inputs (labels, indices) reach the reference as f64.

use ferrometal::{DType, Device, Graph, Result, Tensor, Value};

/// The devices the graph tests run on: those of `common::devices()` (the
/// CPU, plus CUDA or Metal when built and present) that can run graphs. A
/// backend that cannot yet (CUDA today) refuses to compile a graph with
/// `Error::Unsupported`; it is skipped with a note, and is tested here
/// without any change once it can.
pub fn devices() -> Vec<Device> {
    crate::common::devices()
        .into_iter()
        .filter(|device| match Graph::new().unwrap().compile(device) {
            Ok(_) => true,
            Err(e @ ferrometal::Error::Unsupported(_)) => {
                eprintln!("skipping {} for graph tests: {e}", device.location());
                false
            }
            Err(e) => panic!(
                "compiling an empty graph on {} failed: {e}",
                device.location()
            ),
        })
        .collect()
}

/// Deterministic pseudo-random values in (-1, 1).
pub fn values(count: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Rounds to f32 and back: what the graph actually sees.
pub fn f32_round(v: f64) -> f64 {
    f64::from(v as f32)
}

#[derive(Clone, Debug)]
pub enum Data {
    F32(Vec<f64>),
    I32(Vec<i32>),
}

/// One input of the op: a placeholder of this shape fed with this data.
#[derive(Clone, Debug)]
pub struct Arg {
    pub shape: Vec<usize>,
    pub data: Data,
    /// What its gradient must be.
    pub grad: Grad,
}

/// The gradient expected for an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grad {
    /// Central finite differences of the reference.
    Fd,
    /// Exactly zero (no gradient flows to it).
    Zero,
    /// Not asked for (i32 inputs, points where it is undefined).
    Skip,
}

/// An f32 input with pseudo-random values in (-1, 1).
pub fn rand(shape: &[usize], seed: u64) -> Arg {
    let count = shape.iter().product();
    from(shape, values(count, seed))
}

/// An f32 input with the given values.
pub fn from(shape: &[usize], data: Vec<f64>) -> Arg {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "test data of {shape:?}"
    );
    Arg {
        shape: shape.to_vec(),
        data: Data::F32(data.into_iter().map(f32_round).collect()),
        grad: Grad::Fd,
    }
}

/// An i32 input (indices, labels); never differentiated.
pub fn ints(shape: &[usize], data: Vec<i32>) -> Arg {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "test data of {shape:?}"
    );
    Arg {
        shape: shape.to_vec(),
        data: Data::I32(data),
        grad: Grad::Skip,
    }
}

impl Arg {
    /// Each value replaced by `f(value)`.
    pub fn map(mut self, f: impl Fn(f64) -> f64) -> Arg {
        if let Data::F32(v) = &mut self.data {
            for x in v.iter_mut() {
                *x = f32_round(f(*x));
            }
        }
        self
    }

    /// Values within `gap` of any of `points` moved to `gap` away from it,
    /// so a kink or a branch boundary never lies within the finite
    /// difference step (nor within f32 rounding of it).
    pub fn away_from(self, points: &[f64], gap: f64) -> Arg {
        self.map(|mut x| {
            for &p in points {
                if (x - p).abs() < gap {
                    x = if x >= p { p + gap } else { p - gap };
                }
            }
            x
        })
    }

    /// Its gradient must be exactly zero.
    pub fn zero_grad(mut self) -> Arg {
        self.grad = Grad::Zero;
        self
    }

    /// Its gradient is not checked (say why where this is used).
    pub fn skip_grad(mut self) -> Arg {
        self.grad = Grad::Skip;
        self
    }

    fn reference_data(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&i| f64::from(i)).collect(),
        }
    }

    fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) => DType::F32,
            Data::I32(_) => DType::I32,
        }
    }

    /// The data as a tensor on `device`.
    pub fn tensor(&self, device: &Device) -> Tensor {
        match &self.data {
            Data::F32(v) => {
                let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                Tensor::from_slice(device, &self.shape, &v).unwrap()
            }
            Data::I32(v) => Tensor::from_slice(device, &self.shape, v).unwrap(),
        }
    }
}

/// Forward tolerance.
#[derive(Clone, Copy, Debug)]
pub enum Tol {
    /// |got - want| <= tol * (1 + |want|).
    Elementwise(f64),
    /// |got - want| <= tol * (1 + m) where m is the reference evaluated on
    /// the absolute values of the inputs: for sums, matmul, convolution
    /// (multilinear ops) that is the sum of |terms| of each output.
    Terms(f64),
    /// Bit-exact (data movement).
    Exact,
}

/// The reference: the op in f64, given every input's data (i32 as f64).
pub type Reference<'r> = &'r dyn Fn(&[Vec<f64>]) -> Vec<f64>;

/// The op under test, applied to the placeholders.
pub type Build<'b> = &'b dyn for<'g> Fn(&'g Graph, &[Value<'g>]) -> Result<Value<'g>>;

/// One op on one set of inputs; see the module docs.
pub struct OpTest {
    name: String,
    args: Vec<Arg>,
    shape: Option<Vec<usize>>,
    forward: Tol,
    gradient: Option<(f64, f64)>,
    samples: Option<usize>,
    variables: bool,
}

impl OpTest {
    pub fn new(name: impl Into<String>, args: Vec<Arg>) -> OpTest {
        OpTest {
            name: name.into(),
            args,
            shape: None,
            forward: Tol::Elementwise(1e-5),
            gradient: Some((1e-4, 1e-5)),
            samples: None,
            variables: false,
        }
    }

    /// The output shape the op must infer.
    pub fn shape(mut self, shape: &[usize]) -> OpTest {
        self.shape = Some(shape.to_vec());
        self
    }

    pub fn tol(mut self, tol: Tol) -> OpTest {
        self.forward = tol;
        self
    }

    /// Forward only.
    pub fn forward_only(mut self) -> OpTest {
        self.gradient = None;
        self
    }

    /// Checks the gradient of each input at about `count` evenly spread
    /// elements only (for large inputs, where each finite difference costs
    /// a whole reference evaluation).
    pub fn grad_samples(mut self, count: usize) -> OpTest {
        self.samples = Some(count);
        self
    }

    /// Makes the f32 inputs variables initialised with the data, instead
    /// of placeholders fed at the run (the path of model parameters).
    pub fn in_variables(mut self) -> OpTest {
        self.variables = true;
        self
    }

    /// Checks the op on every graph device.
    pub fn run(&self, build: Build<'_>, reference: Reference<'_>) {
        for device in devices() {
            self.run_on(&device, build, reference);
        }
    }

    /// Checks the op on `device`.
    pub fn run_on(&self, device: &Device, build: Build<'_>, reference: Reference<'_>) {
        let name = format!("{} on {}", self.name, device.location());
        let data: Vec<Vec<f64>> = self.args.iter().map(Arg::reference_data).collect();
        let expected = reference(&data);

        let g = Graph::new().unwrap();
        let placeholders: Vec<Value> = self
            .args
            .iter()
            .enumerate()
            .map(|(i, arg)| match (&arg.data, self.variables) {
                (Data::F32(v), true) => {
                    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    g.variable_from(&format!("x{i}"), &arg.shape, &v).unwrap()
                }
                _ => {
                    let dims: Vec<i64> = arg.shape.iter().map(|&d| d as i64).collect();
                    g.placeholder(&format!("x{i}"), arg.dtype(), &dims).unwrap()
                }
            })
            .collect();
        let out = build(&g, &placeholders).unwrap_or_else(|e| panic!("{name}: building: {e}"));
        let out_shape: Vec<usize> = out.shape().unwrap().iter().map(|&d| d as usize).collect();
        if let Some(shape) = &self.shape {
            assert_eq!(&out_shape, shape, "{name}: output shape");
        }
        assert_eq!(
            out_shape.iter().product::<usize>(),
            expected.len(),
            "{name}: the reference gives {} values for output shape {out_shape:?}",
            expected.len()
        );

        // loss = sum(out * R) with R a fixed constant.
        let projection: Vec<f64> = values(expected.len(), 0x5eed)
            .into_iter()
            .map(f32_round)
            .collect();
        let differentiated: Vec<usize> = match self.gradient {
            Some(_) => (0..self.args.len())
                .filter(|&i| self.args[i].grad != Grad::Skip)
                .collect(),
            None => Vec::new(),
        };
        let mut fetches = vec![out];
        if !differentiated.is_empty() {
            let r: Vec<f32> = projection.iter().map(|&v| v as f32).collect();
            let r = g.constant(&out_shape, &r).unwrap();
            let loss = g.sum(g.mul(out, r).unwrap(), &[], false).unwrap();
            let wrt: Vec<Value> = differentiated.iter().map(|&i| placeholders[i]).collect();
            let grads = g
                .gradients(loss, &wrt)
                .unwrap_or_else(|e| panic!("{name}: gradients: {e}"));
            fetches.extend(grads);
        }

        let mut exec = g.compile(device).unwrap();
        let fed: Vec<usize> = (0..self.args.len())
            .filter(|&i| !self.variables || matches!(self.args[i].data, Data::I32(_)))
            .collect();
        let tensors: Vec<Tensor> = fed.iter().map(|&i| self.args[i].tensor(device)).collect();
        let feeds: Vec<(Value, &Tensor)> =
            fed.iter().map(|&i| placeholders[i]).zip(&tensors).collect();
        let results = exec
            .run(&feeds, &fetches)
            .unwrap_or_else(|e| panic!("{name}: running: {e}"));

        // Forward.
        let got = to_f64(&results[0]);
        assert_eq!(results[0].shape(), &out_shape[..], "{name}: fetched shape");
        let magnitude = match self.forward {
            Tol::Terms(_) => {
                let abs: Vec<Vec<f64>> = data
                    .iter()
                    .zip(&self.args)
                    .map(|(d, a)| match a.data {
                        Data::F32(_) => d.iter().map(|v| v.abs()).collect(),
                        Data::I32(_) => d.clone(),
                    })
                    .collect();
                reference(&abs)
            }
            _ => expected.iter().map(|v| v.abs()).collect(),
        };
        for (i, (&got, &want)) in got.iter().zip(&expected).enumerate() {
            let bound = match self.forward {
                Tol::Elementwise(t) | Tol::Terms(t) => t * (1.0 + magnitude[i]),
                Tol::Exact => 0.0,
            };
            let ok = if want.is_finite() {
                (got - want).abs() <= bound
            } else {
                got == want
            };
            assert!(
                ok,
                "{name}: forward[{i}] (of shape {out_shape:?}): got {got}, want {want} (bound {bound:e})"
            );
        }

        // Gradients against central differences of the reference.
        let Some((rel, abs)) = self.gradient else {
            return;
        };
        let objective = |d: &[Vec<f64>]| -> f64 {
            reference(d)
                .iter()
                .zip(&projection)
                .map(|(y, r)| y * r)
                .sum()
        };
        let h = 1e-6;
        for (slot, &k) in differentiated.iter().enumerate() {
            let got = to_f64(&results[1 + slot]);
            assert_eq!(got.len(), data[k].len(), "{name}: gradient {k} size");
            if self.args[k].grad == Grad::Zero {
                assert!(
                    got.iter().all(|&v| v == 0.0),
                    "{name}: the gradient of input {k} must be zero, got {got:?}"
                );
                continue;
            }
            let mut probe = data.clone();
            let len = data[k].len();
            let step = self.samples.map_or(1, |count| (len / count.max(1)).max(1));
            // An odd stride so samples do not all fall in one column.
            let step = if step > 1 && step % 2 == 0 {
                step + 1
            } else {
                step
            };
            for i in (0..len).step_by(step) {
                probe[k][i] = data[k][i] + h;
                let up = objective(&probe);
                probe[k][i] = data[k][i] - h;
                let down = objective(&probe);
                probe[k][i] = data[k][i];
                let want = (up - down) / (2.0 * h);
                let bound = rel * want.abs() + abs;
                assert!(
                    (got[i] - want).abs() <= bound,
                    "{name}: gradient of input {k} [{i}] (shape {:?}): got {}, want {want} (bound {bound:e})",
                    self.args[k].shape,
                    got[i]
                );
            }
        }
    }
}

/// A fetched tensor as f64 (f32 or i32).
pub fn to_f64(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
        DType::I32 => t
            .to_vec::<i32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
        other => panic!("unexpected dtype {other}"),
    }
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// The coordinates of flat index `i` in `shape`.
pub fn coords(shape: &[usize], mut i: usize) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        c[d] = i % shape[d];
        i /= shape[d];
    }
    c
}

/// NumPy broadcasting of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let db = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            assert!(da == db || da == 1 || db == 1, "test shapes {a:?} {b:?}");
            da.max(db)
        })
        .collect()
}

/// The flat index into `shape` of the element broadcast to output
/// coordinates `out_coords`.
pub fn broadcast_index(shape: &[usize], out_coords: &[usize]) -> usize {
    let offset = out_coords.len() - shape.len();
    let mut at = 0;
    for (d, &size) in shape.iter().enumerate() {
        let c = if size == 1 { 0 } else { out_coords[d + offset] };
        at = at * size + c;
    }
    at
}

/// f64 helpers shared by the references.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Softplus computed stably.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The error function to ~1e-16 (Taylor series for |x| < 3, continued
/// fraction of erfc beyond).
pub fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        let (mut sum, mut term, mut n) = (0.0, x, 0.0f64);
        // sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        while n < 200.0 {
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-18 * sum.abs() {
                break;
            }
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
        let ax = x.abs();
        let mut f = ax;
        for k in (1..60).rev() {
            f = ax + f64::from(k) / 2.0 / f;
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f;
        (1.0 - erfc).copysign(x)
    }
}
