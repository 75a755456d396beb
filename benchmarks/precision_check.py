"""Does bf16 autocast train as well as fp32? The same runs in both precisions, seed by seed.

Trains ``--model`` in the ``--profile`` profile (default: resnet20, ``cpu``) for each of
``--seeds`` twice on this machine, once with ``CNNLIB_PRECISION=fp32`` and once with
``CNNLIB_PRECISION=bf16`` (both in channels_last, eager), into a temporary results folder (the
committed runs are not touched), then prints per seed the final test accuracy, the clean training
accuracy and the training time of each, and the bf16 - fp32 difference of the mean test accuracy
with its Welch 95% interval over seeds (``cnnlib.stats.seed_difference``, bounded to [0, 1]).

    python benchmarks/precision_check.py --seeds 0 1 2

On a CPU without hardware bf16 the bf16 runs are emulated and several times slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cnnlib.config import make_config  # noqa: E402
from cnnlib.engine import bf16_features, cpu_name  # noqa: E402
from cnnlib.results import fit_or_load  # noqa: E402
from cnnlib.stats import seed_difference  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()

    os.environ["CNNLIB_CHANNELS_LAST"] = "1"
    os.environ["CNNLIB_COMPILE"] = "0"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for precision in PRECISIONS:  # interleaved, so that a change of load hits both alike
                os.environ["CNNLIB_PRECISION"] = precision
                root = Path(tmp) / precision
                for env, sub in (("CNNLIB_CHECKPOINTS", "checkpoints"), ("CNNLIB_WEIGHTS", "weights")):
                    os.environ[env] = str(root / sub)
                cfg = make_config(args.model, args.profile, seed=seed)
                run = fit_or_load(cfg, root=root / "results", device="cpu", verbose=False)
                engine = run.meta.get("engine", {})
                assert engine.get("precision") == precision, engine  # the switch took effect
                hist = run.history.iloc[-1]
                rows.append(dict(
                    seed=seed, precision=precision, test_acc=run.final["test_acc"],
                    clean_train_acc=hist.get("clean_train_acc", float("nan")),
                    train_s=run.meta["train_s"],
                ))  # fmt: skip
                print(f"{cfg.run_id} {precision}: test {run.final['test_acc']:.2%}, "
                      f"{run.meta['train_s']:.0f} s of training", flush=True)

    table = pd.DataFrame(rows)
    wide = table.pivot(index="seed", columns="precision", values=["test_acc", "clean_train_acc", "train_s"])
    wide.columns = [f"{what} {p}" for what, p in wide.columns]
    acc = {p: table.loc[table.precision == p, "test_acc"].to_numpy() for p in PRECISIONS}
    diff = seed_difference(acc["bf16"], acc["fp32"], bounds=(0.0, 1.0))
    found = ", ".join(bf16_features()) or "no hardware bf16"
    print(f"\n{args.model}, profile {args.profile}; {cpu_name()} ({found}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, channels_last, eager")
    if args.markdown:
        print("| seed | " + " | ".join(wide.columns) + " |\n|---|" + "---:|" * len(wide.columns))
        for seed, row in wide.iterrows():
            print(f"| {seed} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    else:
        print(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    for p in PRECISIONS:
        print(f"mean test accuracy {p}: {acc[p].mean():.2%} (seeds {', '.join(f'{v:.2%}' for v in acc[p])})")
    print(f"bf16 - fp32: {diff.difference * 100:+.2f} points, 95% interval [{diff.low * 100:+.2f}, "
          f"{diff.high * 100:+.2f}] (Welch t, {len(acc['bf16'])} and {len(acc['fp32'])} seeds)")


if __name__ == "__main__":
    main()
