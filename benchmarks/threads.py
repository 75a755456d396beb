"""One training process with all cores' threads, or one process per core with one thread each?

For each model: the images/s of one process with ``--threads`` threads, then the summed images/s of
``--threads`` processes with one thread each, started together (each warms up, then all wait for one
start time, then time the same steps). A step is the recipe's (``cnnlib.engine.time_step``) under
the engine ``cnnlib.engine.choose`` picks for the model on this machine. ``train-missing --workers N``
is the second layout; the first is the default.

    python benchmarks/threads.py --models resnet20 plain20 --batch-size 512 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from cnnlib.engine import choose, cpu_name, time_step  # noqa: E402
from cnnlib.train import stepper  # noqa: E402


def one(model: str, batch: int, steps: int, threads: int, start_at: float | None = None) -> float:
    """Images/s of ``steps`` timed steps in this process with ``threads`` threads (after one warm-up
    step; with ``start_at``, the timed steps begin at that ``time.time()``)."""
    torch.set_num_threads(threads)
    engine = choose("cpu", model, batch, stepper=stepper)  # its threads: the ones just set
    time_step(model, batch, engine, stepper=stepper, steps=1, warmup=1)  # warm-up: allocations, oneDNN primitives
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    step_s, _ = time_step(model, batch, engine, stepper=stepper, steps=steps, warmup=0)
    return batch / step_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "plain20"])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="cores to share (default: all)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "START_AT"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:  # one of the one-thread processes: print its rate
        print(json.dumps(one(a.child[0], a.batch_size, a.steps, 1, float(a.child[1]))))
        return 0
    print(f"{cpu_name()}, {a.threads} cores, batch {a.batch_size}, {a.steps} timed steps per process")
    rows = []
    for model in a.models:
        single = one(model, a.batch_size, a.steps, a.threads)
        start_at = time.time() + 40  # time enough for every child to start and warm up
        children = [subprocess.Popen([sys.executable, __file__, "--child", model, str(start_at), "--batch-size",
                                      str(a.batch_size), "--steps", str(a.steps)], stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(a.threads)]  # fmt: skip
        rates = [float(c.communicate()[0].strip().splitlines()[-1]) for c in children]
        row = {"model": model, f"1 process x {a.threads} threads (img/s)": round(single, 1),
               f"{a.threads} processes x 1 thread, total (img/s)": round(sum(rates), 1),
               "ratio": round(sum(rates) / single, 2)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"cpu": cpu_name(), "threads": a.threads, "batch": a.batch_size, "rows": rows},
                                     indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
