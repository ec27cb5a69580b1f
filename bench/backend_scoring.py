"""Scoring time on each Keras backend beside a training epoch of the same model, same run.

Not a test. For each backend (a child process each, since a process has one backend) the
script builds the zoo's LeNet-5, trains one epoch on the same random 28x28 batches and
then times ``kp.score`` with a weight criterion (``aaws``), a forward-statistics
criterion (``mean_response``) and two gradient criteria (``mean_gradient``, ``taylor``)
over the same batches the epoch saw. Each time is reported as a ratio to that backend's
own training epoch (median of ``--repeats``), so the figures compare what scoring costs
against what the user already pays to fine-tune, not one backend's speed against
another's. Prints the table with the machine and versions.

    python bench/backend_scoring.py [--batches 20] [--batch-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, versions  # noqa: E402

CRITERIA = ("aaws", "mean_response", "mean_gradient", "taylor")

_CHILD = r"""
import json, statistics, sys, time
import numpy as np, keras
import kerasprune as kp
from kerasprune.models import get_model
batches, batch_size, repeats = map(int, sys.argv[1:4])
rng = np.random.default_rng(0)
x = rng.normal(size=(batches * batch_size, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, len(x))
model = get_model("lenet5")
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)  # compile
graph = kp.analyze(model, warn=False)
def timed(fn):
    out = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return statistics.median(out)
res = {"epoch": timed(lambda: model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False))}
for c in %r:
    kp.score(model, c, data=(x[:batch_size], y[:batch_size]), batch_size=batch_size, graph=graph)  # first call builds and compiles
    res[c] = timed(lambda c=c: kp.score(model, c, data=(x, y), batch_size=batch_size, graph=graph))
res["library"] = keras.config.backend()  # also the name of its package
res["version"] = __import__(res["library"]).__version__
print(json.dumps(res))
""" % (CRITERIA,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    args = parser.parse_args()
    rows, libraries = [], []
    for backend in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(args.batches), str(args.batch_size), str(args.repeats)],
            env=env, capture_output=True, text=True,
        )
        if done.returncode != 0:
            rows.append([backend, "failed: " + done.stderr.strip().splitlines()[-1][:80]] + [""] * len(CRITERIA))
            continue
        res = json.loads(done.stdout.strip().splitlines()[-1])
        libraries.append(f"{res['library']} {res['version']}")
        rows.append([backend, f"{res['epoch']:.2f} s"] + [f"{res[c] / res['epoch']:.3f}x" for c in CRITERIA])
    print(f"LeNet-5, one epoch of {args.batches} batches of {args.batch_size} (28x28x1), "
          f"scoring over the same batches; median of {args.repeats}")
    print_table(["backend", "epoch"] + [f"{c} / epoch" for c in CRITERIA], rows)
    print(machine())
    print(versions() + "; backends: " + ", ".join(libraries))


if __name__ == "__main__":
    main()
