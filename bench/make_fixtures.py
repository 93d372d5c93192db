#!/usr/bin/env python3
"""PyTorch reference fixtures for ferrometal's graph engine.

Regenerate with

    python3 bench/make_fixtures.py

(needs PyTorch; the CPU build is enough: `pip install torch`). It writes
tests/fixtures/*.json. The JSON files are committed, so the Rust test
(tests/pytorch_fixtures.rs, `cargo test --release --test pytorch_fixtures`)
needs no Python; rerun this script only to change or add a case, and commit
the JSON it writes with it.

Every case is float32 on the CPU, single-threaded, with torch.manual_seed
fixed and deterministic algorithms on, so reruns with the same PyTorch
version give the same files. Each fixture holds:

  torch_version   the PyTorch that made it
  model           what to build (see build_model)
  optimizer       every hyperparameter of fm_optimizer that the optimizer
                  reads, as PyTorch used it (defaults written out), plus
                  clip_value / clip_norm (0: off)
  parameters      [{name, shape, initial, final}] flat row-major lists;
                  Linear weights are [out, in], conv weights [out, in, kh, kw]
  buffers         BatchNorm running statistics [{name, shape, initial, final}]
  inputs          {shape, steps: [flat list per step]}
  labels          [[class index per sample] per step]
  losses          the mean softmax cross-entropy of each step, computed
                  before that step's update

Numbers are written as the shortest decimal that reads back (decimal ->
f64 -> f32, as serde_json and `as f32` do) to the exact float32 value.

optimizer_defaults.json records PyTorch's default hyperparameters for each
optimizer, which fm_optimizer_default promises to match.
"""

import inspect
import json
import math
import os
import struct
import sys
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
from torch import nn  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SEED = 20240607


def f32(x):
    """x (a Python float holding a float32) as the shortest round-tripping float."""
    want = struct.pack("<f", x)
    for digits in range(1, 10):
        s = "%.*g" % (digits, x)
        if struct.pack("<f", float(s)) == want:
            # repr(float(s)) is no longer than s and reads back to the same double.
            return float(s)
    raise AssertionError(f"no float32 round trip for {x!r}")


def flat(t):
    return [f32(v) for v in t.detach().reshape(-1).tolist()]


def tensor_record(name, initial, final):
    return {
        "name": name,
        "shape": list(initial.shape),
        "initial": flat(initial),
        "final": flat(final),
    }


# --------------------------------------------------------------------------
# Models


class Mlp(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1])
        self.fc2 = nn.Linear(sizes[1], sizes[2])

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class ConvNet(nn.Module):
    # The convolution has no bias: BatchNorm subtracts the batch mean right
    # after it, so its gradient is zero up to rounding noise, and Adam would
    # turn that noise into full-size steps of arbitrary sign that no other
    # implementation could reproduce (and that would leak into the running
    # mean). bias=False is also how conv + BN is written in practice.
    def __init__(self, channels, size, classes, bn_momentum, bn_eps):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)
        self.fc = nn.Linear(channels * (size // 2) ** 2, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.max_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


def build_model(spec):
    if spec["kind"] == "mlp":
        return Mlp(spec["sizes"])
    if spec["kind"] == "conv":
        return ConvNet(
            spec["channels"],
            spec["input"][-1],
            spec["classes"],
            spec["bn_momentum"],
            spec["bn_eps"],
        )
    raise ValueError(spec["kind"])


# --------------------------------------------------------------------------
# Optimizers: PyTorch's object and the full fm_optimizer-style record.


def make_optimizer(kind, params, **kw):
    cls = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
        "adadelta": torch.optim.Adadelta,
        "nadam": torch.optim.NAdam,
    }[kind]
    kw.setdefault("foreach", False)  # the plain per-tensor loop, as on any CPU run
    opt = cls(params, **kw)
    g = opt.param_groups[0]
    rec = {"kind": kind, "learning_rate": g["lr"], "weight_decay": g["weight_decay"]}
    if kind == "sgd":
        rec.update(momentum=g["momentum"], dampening=g["dampening"], nesterov=g["nesterov"])
    elif kind in ("adam", "adamw", "nadam"):
        assert not g.get("amsgrad", False)
        rec.update(beta1=g["betas"][0], beta2=g["betas"][1], eps=g["eps"])
        if kind == "nadam":
            assert not g["decoupled_weight_decay"]
            rec["momentum_decay"] = g["momentum_decay"]
        if kind == "adam":
            assert not g["decoupled_weight_decay"]
    elif kind == "rmsprop":
        rec.update(alpha=g["alpha"], eps=g["eps"], momentum=g["momentum"], centered=g["centered"])
    elif kind == "adagrad":
        assert g["lr_decay"] == 0
        rec.update(eps=g["eps"], initial_accumulator=g["initial_accumulator_value"])
    elif kind == "adadelta":
        rec.update(rho=g["rho"], eps=g["eps"])
    return opt, rec


# --------------------------------------------------------------------------
# Running a case


def run_case(
    name, model_spec, batch, steps, make_batch, opt_kind, opt_kw, clip_value=0.0, clip_norm=0.0
):
    torch.manual_seed(SEED)
    model = build_model(model_spec)
    params = list(model.named_parameters())
    buffers = [(n, b) for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    initial_params = {n: p.detach().clone() for n, p in params}
    initial_buffers = {n: b.detach().clone() for n, b in buffers}

    opt, opt_rec = make_optimizer(opt_kind, [p for _, p in params], **opt_kw)
    opt_rec["clip_value"] = clip_value
    opt_rec["clip_norm"] = clip_norm

    data = torch.Generator().manual_seed(SEED + 1)
    xs, ys, losses, clip_stats = [], [], [], []
    model.train()
    for _ in range(steps):
        x, y = make_batch(data, batch)
        xs.append(x)
        ys.append(y)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads = [p.grad for _, p in params]
        # ferrometal's order: by value first, then by global norm.
        if clip_value > 0:
            clip_stats.append(sum(int((g.abs() > clip_value).sum()) for g in grads))
            torch.nn.utils.clip_grad_value_([p for _, p in params], clip_value)
        if clip_norm > 0:
            total = torch.nn.utils.clip_grad_norm_([p for _, p in params], clip_norm)
            clip_stats.append(f32(float(total)))
        opt.step()
        losses.append(f32(loss.item()))

    record = {
        "name": name,
        "generated_by": "bench/make_fixtures.py",
        "torch_version": torch.__version__,
        "seed": SEED,
        "model": model_spec,
        "loss": "softmax_cross_entropy (mean over the batch)",
        "optimizer": opt_rec,
        "batch": batch,
        "steps": steps,
        "parameters": [tensor_record(n, initial_params[n], p) for n, p in params],
        "buffers": [tensor_record(n, initial_buffers[n], b) for n, b in buffers],
        "inputs": {"shape": list(xs[0].shape), "steps": [flat(x) for x in xs]},
        "labels": [y.tolist() for y in ys],
        "losses": losses,
    }
    if clip_value > 0:
        record["clipped_elements_per_step"] = clip_stats
        assert all(c > 0 for c in clip_stats), f"{name}: value clipping never active"
    if clip_norm > 0:
        record["grad_norm_before_clipping"] = clip_stats
        # Mostly above the bound (scaled down), which exercises the clipping.
        assert sum(c > clip_norm for c in clip_stats) >= steps // 2, f"{name}: norm clipping rarely active"
    return record


def gaussian_batch(features, classes):
    def make(gen, batch):
        x = torch.randn(batch, *features, generator=gen, dtype=torch.float32)
        y = torch.randint(0, classes, (batch,), generator=gen)
        return x, y

    return make


def mnist_like_batch(gen, batch):
    # Sparse images in [0, 1] like MNIST's (about 3/4 zeros), quantised to
    # multiples of 1/32 so the fixture stays small; labels 0..9.
    x = torch.rand(batch, 784, generator=gen, dtype=torch.float32)
    ink = torch.rand(batch, 784, generator=gen, dtype=torch.float32) < 0.25
    x = torch.where(ink, torch.round(x * 32) / 32, torch.zeros(()))
    y = torch.randint(0, 10, (batch,), generator=gen)
    return x, y


TINY = {"kind": "mlp", "sizes": [4, 5, 3], "activation": "relu"}
TINY_BATCH, TINY_STEPS = 6, 8

# (fixture name, optimizer, its keyword arguments, clip_value, clip_norm)
TINY_CASES = [
    ("sgd", "sgd", dict(lr=0.1), 0.0, 0.0),
    ("sgd_momentum", "sgd", dict(lr=0.1, momentum=0.9), 0.0, 0.0),
    ("sgd_nesterov", "sgd", dict(lr=0.1, momentum=0.9, nesterov=True), 0.0, 0.0),
    ("sgd_momentum_weight_decay", "sgd", dict(lr=0.1, momentum=0.9, weight_decay=1e-2), 0.0, 0.0),
    ("adam", "adam", dict(lr=1e-2), 0.0, 0.0),
    ("adam_weight_decay", "adam", dict(lr=1e-2, weight_decay=1e-2), 0.0, 0.0),
    ("adamw", "adamw", dict(lr=1e-2, weight_decay=1e-2), 0.0, 0.0),
    ("rmsprop", "rmsprop", dict(lr=1e-2), 0.0, 0.0),
    ("rmsprop_momentum", "rmsprop", dict(lr=1e-2, momentum=0.9), 0.0, 0.0),
    ("rmsprop_centered", "rmsprop", dict(lr=1e-2, centered=True), 0.0, 0.0),
    ("adagrad", "adagrad", dict(lr=0.1), 0.0, 0.0),
    ("adadelta", "adadelta", dict(lr=1.0), 0.0, 0.0),
    ("nadam", "nadam", dict(lr=1e-2), 0.0, 0.0),
    ("sgd_clip_norm", "sgd", dict(lr=0.1), 0.0, 0.5),
    ("sgd_clip_value", "sgd", dict(lr=0.1), 0.01, 0.0),
]


def optimizer_defaults():
    out = {
        "name": "optimizer_defaults",
        "generated_by": "bench/make_fixtures.py",
        "torch_version": torch.__version__,
    }
    for kind, cls in [
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("rmsprop", torch.optim.RMSprop),
        ("adagrad", torch.optim.Adagrad),
        ("adadelta", torch.optim.Adadelta),
        ("nadam", torch.optim.NAdam),
    ]:
        sig = inspect.signature(cls.__init__).parameters
        d = {}
        for key, value in sig.items():
            if key in ("self", "params") or value.default is inspect.Parameter.empty:
                continue
            v = value.default
            if key == "betas":
                d["beta1"], d["beta2"] = v
            elif key == "initial_accumulator_value":
                d["initial_accumulator"] = v
            elif key == "lr":
                d["learning_rate"] = v
            elif isinstance(v, (bool, int, float)) and key not in (
                "maximize",
                "differentiable",
                "capturable",
                "foreach",
                "fused",
                "amsgrad",
                "decoupled_weight_decay",
                "lr_decay",
            ):
                d[key] = v
        out[kind] = d
    return out


def write(record):
    path = os.path.join(OUT_DIR, record["name"] + ".json")
    with open(path, "w") as f:
        json.dump(record, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    return path, os.path.getsize(path)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    os.makedirs(OUT_DIR, exist_ok=True)

    records = []
    for suffix, kind, kw, clip_value, clip_norm in TINY_CASES:
        records.append(
            run_case(
                "mlp_tiny_" + suffix,
                TINY,
                TINY_BATCH,
                TINY_STEPS,
                gaussian_batch([4], 3),
                kind,
                kw,
                clip_value,
                clip_norm,
            )
        )
    records.append(
        run_case(
            "mlp_784_sgd_momentum",
            {"kind": "mlp", "sizes": [784, 32, 10], "activation": "relu"},
            16,
            5,
            mnist_like_batch,
            "sgd",
            dict(lr=0.05, momentum=0.9),
        )
    )
    records.append(
        run_case(
            "conv_bn_adam",
            {
                "kind": "conv",
                "input": [1, 8, 8],
                "channels": 4,
                "kernel": 3,
                "padding": 1,
                "conv_bias": False,
                "bn_momentum": 0.1,
                "bn_eps": 1e-5,
                "pool": 2,
                "classes": 3,
            },
            8,
            5,
            gaussian_batch([1, 8, 8], 3),
            "adam",
            dict(lr=1e-2),
        )
    )
    records.append(optimizer_defaults())

    total = 0
    for record in records:
        assert all(math.isfinite(v) for v in record.get("losses", []))
        path, size = write(record)
        total += size
        print(f"{os.path.relpath(path)}: {size} bytes")
    print(f"total {total} bytes, torch {torch.__version__}")
    if total > 2_000_000:
        sys.exit("fixtures exceed 2 MB")


if __name__ == "__main__":
    main()
