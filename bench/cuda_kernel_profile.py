"""Where a CUDA training step's time goes, kernel by kernel.

Runs examples/bench under Nsight Compute (ncu), which times every kernel
(graph nodes included) of a few steps, and prints, for one step, each
kernel's launches and time, largest first, with the sum.

    python3 bench/cuda_kernel_profile.py --bench target/release/examples/bench --model cifar
"""
import argparse
import collections
import csv
import io
import subprocess
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", default="target/release/examples/bench")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--ncu", default="ncu")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    steps, warmup = 2, 1
    total_steps = steps + warmup + 1  # bench runs one more step to read the loss
    command = [args.ncu, "--csv", "--metrics", "gpu__time_duration.sum", "--print-units", "base",
               args.bench, "--model", args.model, "--backend", "cuda", "--steps", str(steps),
               "--warmup", str(warmup)]
    run = subprocess.run(command, capture_output=True, text=True)
    lines = [l for l in run.stdout.splitlines() if l.startswith('"')]
    if not lines:
        sys.exit(f"ncu printed no table:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    time = collections.defaultdict(float)
    count = collections.Counter()
    for row in rows:
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = row["Kernel Name"].split("(")[0][:70]
        time[name] += float(row["Metric Value"].replace(",", "")) / 1000.0  # ns -> us
        count[name] += 1
    total = sum(time.values()) / total_steps
    print(f"{args.model}: {sum(count.values()) / total_steps:.0f} kernels per step, "
          f"{total:.1f} us of kernel time per step")
    for name, t in sorted(time.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {t / total_steps:9.1f} us  {count[name] / total_steps:5.1f}x  {name}")


if __name__ == "__main__":
    main()
