#!/usr/bin/env python3
"""Loss trajectories of the cnn64 reference model under PyTorch, for
tests/pytorch_fixtures.rs (cnn64_follows_pytorch_...): 30 steps of SGD with momentum, Adam, AdamW
and Nadam from the same weights on the same batches as ferrometal.

Weights and batches are not stored: both sides generate them from the same
integer formula (`value(stream, i)` below, mirrored in the Rust test), so
the fixture is only the losses. Regenerate with

    python3 bench/make_trajectories.py

(needs PyTorch; CPU, one thread, deterministic). It writes
tests/fixtures/cnn64_trajectories.json; commit it with any change here.
"""

import json
import math
import os

import torch
from torch import nn

from make_fixtures import f32  # noqa: E402 (the shortest float32 round trip)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "cnn64_trajectories.json")
STEPS, BATCH = 30, 32

# (name, optimizer, keyword arguments)
CASES = [
    ("sgd_momentum", torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
    ("adam", torch.optim.Adam, dict(lr=1e-3)),
    ("adamw", torch.optim.AdamW, dict(lr=1e-3, weight_decay=1e-2)),
    ("nadam", torch.optim.NAdam, dict(lr=2e-3)),
]


def value(stream, i):
    """A number in [-1, 1) from two integers: a 64-bit multiplicative hash,
    its top 24 bits as a fraction. Exact in binary floating point, so
    Python and Rust compute the same float32."""
    h = ((stream * 0x9E3779B97F4A7C15) ^ (i * 0xBF58476D1CE4E5B9)) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 31
    h = (h * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return ((h >> 40) / float(1 << 24)) * 2.0 - 1.0


def tensor(stream, shape, scale):
    """value(stream, i) * scale for every i, as float32, vectorised: numpy's
    uint64 arithmetic wraps like the masked Python ints above."""
    n = math.prod(shape)
    try:
        import numpy as np
    except ImportError:  # slower, same values
        return torch.tensor([value(stream, k) * scale for k in range(n)], dtype=torch.float32).reshape(shape)
    i = np.arange(n, dtype=np.uint64)
    h = np.uint64((stream * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) ^ (i * np.uint64(0xBF58476D1CE4E5B9))
    h ^= h >> np.uint64(31)
    h = h * np.uint64(0x94D049BB133111EB)
    data = ((h >> np.uint64(40)).astype(np.float64) / float(1 << 24) * 2.0 - 1.0) * scale
    assert n < 4 or float(np.float32(data[3])) == float(np.float32(value(stream, 3) * scale))
    return torch.from_numpy(data.astype(np.float32)).reshape(shape)


def model():
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 2),
    )
    # Weights: stream k for the k-th parameter, uniform in +-1/sqrt(fan_in).
    with torch.no_grad():
        for k, p in enumerate(m.parameters()):
            fan_in = p.shape[1] * math.prod(p.shape[2:]) if p.dim() > 1 else p.shape[0]
            p.copy_(tensor(100 + k, list(p.shape), 1.0 / math.sqrt(fan_in)))
    return m


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = {"generated_by": "bench/make_trajectories.py", "torch_version": torch.__version__,
           "steps": STEPS, "batch": BATCH, "cases": {}}
    for name, cls, kw in CASES:
        m = model()
        opt = cls(m.parameters(), foreach=False, **kw)
        losses = []
        for step in range(STEPS):
            x = tensor(1000 + step, [BATCH, 3, 64, 64], 1.0)
            y = torch.tensor([(i + step) % 2 for i in range(BATCH)])
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            losses.append(f32(loss.item()))
        out["cases"][name] = {"optimizer": kw, "losses": losses}
        print(name, losses[0], losses[-1])
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
