"""Images/s of one training step per model and engine setting, on random images.

For each model: fp32 (NCHW), fp32 + channels_last, bf16 autocast + channels_last and, with
``--compile``, the two channels_last settings under ``torch.compile`` (compile time reported apart).
A step is the recipe's (forward, label-smoothing loss, backward, SGD with Nesterov); the first
``--warmup`` steps are not timed. This is what ``cnnlib.engine`` measures, at the recipe's batch
size and for every setting, to show where each one pays.

    python benchmarks/step_rates.py --batch-size 512 --models resnet20 plain20 resnet56
    python benchmarks/step_rates.py --batch-size 128 --models resnet18 --compile --markdown
    python benchmarks/step_rates.py --models seed_senet18 --settings bf16+cl "bf16+cl compiled"

``--store`` times every model of the study in one run, for notebook 05's training-time ranking: each model under
each engine setting the training check chooses among (``cnnlib.engine``), all of them in turns (a round times
one step of every model and setting, in a shuffled order, so that a busy moment or a drifting clock costs them
about alike), and stores every timed step in ``<results>/step-times/step_times.csv`` with the machine, threads,
batch and the load the other processes put on the cores meanwhile (``step_times.json``). Run it on an otherwise
idle machine, with the threads training uses:

    OMP_NUM_THREADS=2 python benchmarks/step_rates.py --store
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cnnlib import engine  # noqa: E402
from cnnlib.engine import Engine, bf16_features, cpu_name, time_step  # noqa: E402
from cnnlib.models import FAMILIES  # noqa: E402
from cnnlib.paths import results_root  # noqa: E402
from cnnlib.render import table  # noqa: E402
from cnnlib.results import write_table  # noqa: E402
from cnnlib.train import stepper  # noqa: E402

SETTINGS = {"fp32": ("fp32", False, False), "fp32+cl": ("fp32", True, False), "bf16+cl": ("bf16", True, False),
            "fp32+cl compiled": ("fp32", True, True), "bf16+cl compiled": ("bf16", True, True)}  # fmt: skip


def rate(model_name: str, batch: int, setting: str, steps: int, warmup: int) -> tuple[float, float]:
    """(images/s of the timed steps, seconds of the warm-up steps: the compile time when compiled)."""
    precision, cl, compiled = SETTINGS[setting]
    step_s, warm_s = time_step(model_name, batch, Engine("cpu", precision, cl, compiled, torch.get_num_threads()),
                               stepper=stepper, steps=steps, warmup=warmup)  # fmt: skip
    return batch / step_s, warm_s


def store(models: list[str], batch: int, rounds: int, warmup: int) -> pd.DataFrame:
    """Every model's training step under each candidate engine, in shuffled turns; the timed steps are stored
    (one row per step: model, setting, round, seconds) with the conditions in a JSON beside them."""
    candidates = engine._candidates()  # the settings the training check chooses among, on this CPU
    steps = {(m, s): stepper(m, batch, e) for m in models for s, e in candidates.items()}
    order = list(steps)
    for n in range(warmup):  # oneDNN's primitive creation and the allocator's first calls, untimed
        for key in order:
            steps[key]()
        print(f"warm-up {n + 1}/{warmup} done", file=sys.stderr, flush=True)
    rows, started = [], time.strftime("%Y-%m-%d %H:%M:%S")
    with engine._LoadMeter() as load:
        for r in range(rounds):
            random.Random(r).shuffle(order)
            for key in order:
                t0 = time.perf_counter()
                steps[key]()
                rows.append(dict(model=key[0], setting=key[1], round=r, seconds=time.perf_counter() - t0))
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows).sort_values(["model", "setting", "round"], kind="stable")
    path = results_root() / "step-times" / "step_times.csv"
    meta = dict(cpu=cpu_name(), cores=os.cpu_count(), hardware_bf16=list(bf16_features()), torch=torch.__version__,
                threads=torch.get_num_threads(), batch=batch, rounds=rounds, warmup=warmup,
                settings=list(candidates), started=started, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                others_share=None if load.others_share is None else round(load.others_share, 3),
                step="the recipe's training step (forward, label-smoothing loss, backward, SGD with Nesterov) on "
                     "random images, eager")  # fmt: skip
    write_table(path, df, meta, float_format="%.5f")  # the table, then its record with the table's checksum
    print(f"stored in {path.parent}; the other processes used {meta['others_share']} of the cores", file=sys.stderr)
    return df


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20"])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also time the channels_last settings compiled")
    p.add_argument("--no-bf16", action="store_true", help="skip bf16 (slow where the CPU has no hardware bf16)")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), help="only these settings")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--store", action="store_true", help="time every model of the study in one run and store the "
                   "steps for notebook 05 (batch 128, 7 rounds, 2 warm-up steps unless given)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=7, help="with --store: timed steps per model and setting")
    args = p.parse_args(argv)
    if args.store:
        models = [m for family in FAMILIES.values() for m in family]
        batch = args.batch_size if "--batch-size" in (argv or sys.argv) else 128
        df = store(models, batch, args.rounds, max(args.warmup, 2))
        medians = df.groupby(["model", "setting"], sort=False)["seconds"].median().unstack()
        print(table(medians.round(4), index=True) if args.markdown else medians.round(4).to_string())
        return 0
    settings = args.settings or [s for s in SETTINGS if (args.compile or "compiled" not in s)
                                 and not (args.no_bf16 and "bf16" in s)]  # fmt: skip
    rows = []
    for name in args.models:
        row = {"model": name}
        for s in settings:
            r, warm = rate(name, args.batch_size, s, args.steps, args.warmup + (1 if "compiled" in s else 0))
            row[s] = round(r, 1)
            if "compiled" in s:
                row[f"{s}: compile + warm-up s"] = round(warm, 1)
            print(f"{name} {s}: {r:.1f} images/s", file=sys.stderr, flush=True)
        rows.append(row)
    df = pd.DataFrame(rows)
    print(f"{cpu_name()}, {os.cpu_count()} cores, hardware bf16: {', '.join(bf16_features()) or 'none'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(table(df) if args.markdown else df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
