"""The engine's CPU check with and without a busy moment beside it: the check before and after it
learnt to survive one, and which engine a run gets afterwards.

For each repetition and each condition (cores free; a busy loop on one core beside the check, a
second process as a test suite or another job would be), two checks of one model's training step at
the check's batch:

* ``before``: the check as it was until 2026-12-05: each candidate timed alone, one warm-up step
  and two timed steps, the mean compared; its choice was cached for good.
* ``after``: ``cnnlib.engine.check``: the candidates timed in turns after two warm-up steps each,
  medians compared, the other processes' share of the cores recorded; cached as provisional if
  the cores were busy.

Then, with the busy loop stopped, what a run that starts afterwards gets: ``before``, the cached
choice (the busy check's, for good); ``after``, ``engine.choose`` on the same cache, which takes a
provisional check again. Each condition uses a fresh cache in a temporary folder (the user's stays
untouched). Run it with nothing else on the machine:

    python benchmarks/engine_check.py --model resnet20 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cnnlib import engine  # noqa: E402
from cnnlib.render import table  # noqa: E402
from cnnlib.train import stepper  # noqa: E402


def before(model: str, batch: int) -> dict:
    """The earlier check: candidates one after the other, one warm-up and two timed steps each, mean."""
    candidates = engine._candidates()
    times = {name: engine.time_step(model, batch, eng, stepper=stepper, steps=2, warmup=1)[0]
             for name, eng in candidates.items()}  # fmt: skip
    best = min(times, key=times.get)
    return dict(choice=best, **{f"{k} ms": round(1000 * v) for k, v in times.items()})


def after(model: str, batch: int) -> dict:
    m = engine.check(model, batch, torch.get_num_threads(), stepper=stepper)
    best = f"{m['precision']}{'+cl' if m['channels_last'] else ''}"
    return dict(choice=best, **{f"{k} ms": round(1000 * v) for k, v in m["step_s"].items()},
                others_pct=m["others_share"] and round(100 * m["others_share"]), trusted=m["trusted"])  # fmt: skip


def busy_loop() -> subprocess.Popen:
    """A process that keeps one core busy (pure Python, one thread) until it is stopped."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=engine.CHECK_BATCH)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for rep in range(args.repeats):
        for condition in ("cores free", "busy loop on one core"):
            with tempfile.TemporaryDirectory() as tmp:
                os.environ["CNNLIB_ENGINE_CACHE"] = str(Path(tmp) / "engine.json")
                loop = busy_loop() if condition != "cores free" else None
                time.sleep(1.0 if loop else 0.0)  # the loop running before the checks start
                try:
                    old, new = before(args.model, args.batch), after(args.model, args.batch)
                finally:
                    if loop is not None:
                        loop.kill()
                        loop.wait()
                time.sleep(1.0)
                # a run starting afterwards: the earlier check kept its choice for good; the check now
                # reuses only a trusted one, and takes a provisional one again
                run = engine.choose("cpu", args.model, 512, stepper=stepper)
                later = f"{run.precision}{'+cl' if run.channels_last else ''}"
            rows.append(dict(repeat=rep + 1, condition=condition, check="before", **old,
                             **{"a later run trains in": old["choice"]}))  # fmt: skip
            rows.append(dict(repeat=rep + 1, condition=condition, check="after", **new,
                             **{"a later run trains in": later}))  # fmt: skip
            print(rows[-2], rows[-1], file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    print(f"{engine.cpu_name()}, {os.cpu_count()} cores, hardware bf16: {', '.join(engine.bf16_features()) or 'none'};"
          f" torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model} at batch {args.batch}")
    print(table(df) if args.markdown else df.to_string(index=False, na_rep="-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
