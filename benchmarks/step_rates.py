"""Images/s of one training step per model and engine setting, on random images.

For each model: fp32 (NCHW), fp32 + channels_last, bf16 autocast + channels_last and, with
``--compile``, the two channels_last settings under ``torch.compile`` (compile time reported apart).
A step is the recipe's (forward, label-smoothing loss, backward, SGD with Nesterov); the first
``--warmup`` steps are not timed. This is what ``cnnlib.engine`` measures, at the recipe's batch
size and for every setting, to show where each one pays.

    python benchmarks/step_rates.py --batch-size 512 --models resnet20 plain20 resnet56
    python benchmarks/step_rates.py --batch-size 128 --models resnet18 --compile --markdown
    python benchmarks/step_rates.py --models seed_senet18 --settings bf16+cl "bf16+cl compiled"
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cnnlib.engine import Engine, bf16_features, cpu_name, time_step  # noqa: E402
from cnnlib.render import table  # noqa: E402
from cnnlib.train import stepper  # noqa: E402

SETTINGS = {"fp32": ("fp32", False, False), "fp32+cl": ("fp32", True, False), "bf16+cl": ("bf16", True, False),
            "fp32+cl compiled": ("fp32", True, True), "bf16+cl compiled": ("bf16", True, True)}  # fmt: skip


def rate(model_name: str, batch: int, setting: str, steps: int, warmup: int) -> tuple[float, float]:
    """(images/s of the timed steps, seconds of the warm-up steps: the compile time when compiled)."""
    precision, cl, compiled = SETTINGS[setting]
    step_s, warm_s = time_step(model_name, batch, Engine("cpu", precision, cl, compiled, torch.get_num_threads()),
                               stepper=stepper, steps=steps, warmup=warmup)  # fmt: skip
    return batch / step_s, warm_s


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
    args = p.parse_args(argv)
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
