"""Training-step throughput of the reference models (DESIGN.md) in PyTorch,
the twin of examples/bench.rs: same shapes, batch sizes, optimizers, one
random batch resident on the device, loss read back after the timed steps.

    python3 bench/pytorch_bench.py --model mlp --device cpu --threads 2

Modes: eager (default). On CUDA, --mode graph captures the whole step
(forward, backward, optimizer) in one CUDA graph and replays it, and --mode
compile does the same around a torch.compile'd model
(max-autotune-no-cudagraphs): PyTorch's fastest. TF32 is off everywhere (fp32,
like ferrometal's default). CPU runs use eager mode with --threads intra-op
threads.
"""
import argparse
import time

import torch
from torch import nn


def reference(name):
    if name == "cnn64":
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 2))
        return model, (3, 64, 64), 32, 2, 200, lambda p: torch.optim.Adam(p, lr=1e-3)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                              nn.Linear(128, 10))
        return model, (784,), 128, 10, 500, lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)
    if name == "cifar":
        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU()]
        model = nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2),
                              *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
                              *block(64, 128), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128 * 4 * 4, 10))
        return model, (3, 32, 32), 128, 10, 8, lambda p: torch.optim.Adam(p, lr=1e-3)
    raise SystemExit(f"unknown model {name}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mlp", choices=["cnn64", "mlp", "cifar"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--mode", default="eager", choices=["eager", "graph", "compile"])
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, sample, batch, classes, steps, make_optimizer = reference(args.model)
    batch = args.batch or batch
    steps = args.steps or steps
    device = torch.device(args.device)
    if args.mode != "eager" and device.type != "cuda":
        raise SystemExit(f"--mode {args.mode} needs a CUDA device")
    model = model.to(device)
    if args.mode == "compile":
        model = torch.compile(model, mode="max-autotune-no-cudagraphs")
    optimizer = make_optimizer(model.parameters())
    if args.mode != "eager":
        # Optimizer state on the device, so that the step can be captured.
        for group in optimizer.param_groups:
            if "capturable" in group:
                group["capturable"] = True
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand((batch, *sample), device=device) * 2 - 1
    y = torch.arange(batch, device=device) % classes

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    if args.mode != "eager":
        # Warm up on a side stream (lazy state, autotuning), then capture
        # the whole step once; each step is then one replay.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(3, args.warmup)):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = loss_fn(model(x), y)
            static_loss.backward()
            optimizer.step()

        def step():
            graph.replay()
            return static_loss

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    loss = step().item()
    seconds = time.perf_counter() - started
    print(f"pytorch {args.mode} {args.model} {device} batch {batch}: {(steps + 1) / seconds:.1f} steps/s "
          f"({steps + 1} steps in {seconds:.2f} s), threads {torch.get_num_threads()}, loss {loss:.4f}")


if __name__ == "__main__":
    main()
