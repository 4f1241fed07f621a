"""The paper's network in Sony's nnabla (the engine behind Neural Network Console), for
``bench_speed.py``: training samples/s at one batch size.

Runs in its own Python 3.10 environment (nnabla 1.39 installs only there):
    ~/.pyenv/versions/3.10.13/bin/python -m venv nnabla-venv && nnabla-venv/bin/pip install nnabla==1.39.0
    nnabla-venv/bin/python benchmarks/nnabla_worker.py --seconds 15 --batch 8
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    import nnabla as nn
    import nnabla.functions as F
    import nnabla.parametric_functions as PF
    import nnabla.solvers as S
    import numpy as np

    nn.seed(0)
    rng = np.random.default_rng(0)
    xs = [nn.Variable((args.batch, 1, 128, 128)) for _ in range(10)]
    for x in xs:
        x.d = rng.random(x.shape, dtype=np.float32)
    y = nn.Variable((args.batch, 1))
    y.d = rng.random(y.shape, dtype=np.float32) * 24

    def branch(x, name):
        with nn.parameter_scope(name):
            h = F.max_pooling(F.relu(PF.convolution(x, 16, (5, 5), name="conv1")), (2, 2))
            h = F.max_pooling(F.relu(PF.convolution(h, 8, (5, 5), name="conv2")), (2, 2))
            return F.relu(PF.affine(h, 100, name="dense"))

    sides = []
    for side, group in (("t1", xs[:5]), ("t2", xs[5:])):
        h = F.concatenate(*[branch(x, f"{side}_{i}") for i, x in enumerate(group)], axis=1)
        h = F.relu(PF.affine(h, 100, name=f"{side}_dense1"))
        sides.append(F.relu(PF.affine(h, 100, name=f"{side}_dense2")))
    h = F.concatenate(*sides, axis=1)
    for i, units in enumerate((200, 50, 25)):
        h = F.relu(PF.affine(h, units, name=f"joint{i}"))
    loss = F.mean(F.squared_error(PF.affine(h, 1, name="age"), y))
    solver = S.Adam(alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    solver.set_parameters(nn.get_parameters())

    def step():
        loss.forward(clear_no_need_grad=True)
        solver.zero_grad()
        loss.backward(clear_buffer=True)
        solver.update()

    for _ in range(3):
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
    print(json.dumps({"samples_per_s": steps * args.batch / (time.perf_counter() - start),
                      "version": nn.__version__,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
