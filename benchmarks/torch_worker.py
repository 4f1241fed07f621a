"""The paper's network in PyTorch, for ``bench_speed.py``: training samples/s at one batch size.

Standalone (needs only torch and numpy). Prints one JSON line. Both memory layouts are timed and
the faster one is reported, as the benchmark compares against PyTorch at its best.

Usage: python benchmarks/torch_worker.py --seconds 15 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def build(torch):
    nn = torch.nn

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(16, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                          nn.Linear(29 * 29 * 8, 100), nn.ReLU())

        def forward(self, x):
            return self.features(x)

    class Side(nn.Module):
        def __init__(self):
            super().__init__()
            self.branches = nn.ModuleList(Branch() for _ in range(5))
            self.dense = nn.Sequential(nn.Linear(500, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU())

        def forward(self, xs):
            return self.dense(torch.cat([b(x) for b, x in zip(self.branches, xs)], dim=1))

    class MyelinCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.t1, self.t2 = Side(), Side()
            self.joint = nn.Sequential(nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 50), nn.ReLU(),
                                       nn.Linear(50, 25), nn.ReLU(), nn.Linear(25, 1))

        def forward(self, xs):
            return self.joint(torch.cat([self.t1(xs[:5]), self.t2(xs[5:])], dim=1))

    return MyelinCNN()


def measure(torch, layout: str, seconds: float, batch: int) -> float:
    torch.manual_seed(0)
    model = build(torch)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(batch, 1, 128, 128, generator=g).contiguous(memory_format=fmt) for _ in range(10)]
    y = torch.rand(batch, 1, generator=g) * 24

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(xs) - y) ** 2)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    rates = {layout: measure(torch, layout, args.seconds / 2, args.batch) for layout in ("channels_last", "default")}
    best = max(rates, key=rates.get)
    print(json.dumps({"samples_per_s": rates[best], "layout": best, "rates": rates,
                      "version": torch.__version__,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
