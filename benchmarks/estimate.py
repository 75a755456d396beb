"""A-priori H200 time estimate for every run of the full profile, built on the CPU.

For one training step of each model (forward, backward, SGD update) at the profile's batch
size, a ``TorchDispatchMode`` records every ATen operator that runs: the count approximates
the CUDA kernel launches, and the bytes of each operator's tensor inputs and outputs
(at 2 bytes per activation element, as under bf16 autocast; parameters and optimizer state in
fp32) approximate the memory traffic. ``FlopCounterMode`` counts the floating-point
operations. Per-epoch evaluation (test set and the clean training subset, forward only) is
added at a third of a training step per image.

A step then costs max(compute + memory, launches) with

    compute  = FLOPs / (EFF_FLOPS * 790 TFLOP/s)   (bf16 dense peak of the H200)
    memory   = bytes / (EFF_BW * 4.3 TB/s)         (HBM3e bandwidth)
    launches = ops * LAUNCH_S                       (eager PyTorch: the CPU issues one op at a time)

The efficiencies are assumptions, not measurements: cuDNN reaches a fraction of peak on
CIFAR-sized convolutions, so EFF_FLOPS = 0.25 for convolutions with >= 64 channels and 0.08
for the thin 16-64-channel nets; EFF_BW = 0.5; LAUNCH_S = 12 us per op. The first GPU run
measures the real times; ``benchmarks/RESULTS.md`` compares them.

    python benchmarks/estimate.py [--profile full] [--markdown]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnlib.models import create_model  # noqa: E402
from cnnlib.plan import plan  # noqa: E402

PEAK_FLOPS = 790e12  # H200 bf16 dense, FLOP/s
PEAK_BW = 4.3e12  # H200 HBM3e, bytes/s
EFF_BW = 0.5
LAUNCH_S = 12e-6
THIN = {"plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56", "seed_cnn"}
TRAIN_IMAGES, TEST_IMAGES, CLEAN_IMAGES = 50_000, 10_000, 10_000
# views and metadata ops launch no kernel
_FREE = {"view", "_unsafe_view", "t", "transpose", "expand", "permute", "detach", "alias", "as_strided",
         "unsqueeze", "squeeze", "reshape", "slice", "select", "split", "unbind", "empty_like", "empty",
         "lift_fresh", "_to_copy_noop", "new_empty_strided", "empty_strided"}


class OpCounter(TorchDispatchMode):
    """Counts kernel-launching ATen ops and the bytes their tensors occupy."""

    def __init__(self, act_bytes: int = 2):
        super().__init__()
        self.ops = 0
        self.bytes = 0
        self.act_bytes = act_bytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if name not in _FREE:
            self.ops += 1
            for t in tree_flatten((args, kwargs, out))[0]:
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    # activations travel in bf16 under autocast; count 2 bytes per element
                    self.bytes += t.numel() * min(t.element_size(), self.act_bytes)
        return out


def step_counts(name: str, batch: int) -> tuple[float, int, float]:
    """(FLOPs, ops, bytes) of one training step of ``name`` at ``batch`` images."""
    torch.manual_seed(0)
    model = create_model(name).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          foreach=True)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    flops = FlopCounterMode(display=False)
    with flops:
        F.cross_entropy(model(x), y).backward()
    opt.zero_grad()
    counter = OpCounter()
    with counter:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(flops.get_total_flops()), counter.ops, float(counter.bytes)


def estimate(cfg, small: int = 8, large: int = 16) -> dict:
    # FLOPs and bytes grow linearly with the batch on top of a fixed part (weights, gradients,
    # optimizer state): two batch sizes give both; the op count does not depend on the batch
    f_s, ops, b_s = step_counts(cfg.model, small)
    f_l, _, b_l = step_counts(cfg.model, large)
    f_one, b_one = (f_l - f_s) / (large - small), (b_l - b_s) / (large - small)
    f_fixed, b_fixed = f_s - small * f_one, b_s - small * b_one
    eff = 0.08 if cfg.model in THIN else 0.25
    b = cfg.batch_size
    compute = (f_fixed + f_one * b) / (eff * PEAK_FLOPS)
    memory = (b_fixed + b_one * b) / (EFF_BW * PEAK_BW)
    launch = ops * LAUNCH_S
    step = max(compute + memory, launch)
    steps = TRAIN_IMAGES // b
    evals = (TEST_IMAGES + CLEAN_IMAGES) / b / 3 * (compute + memory) + 2 * (ops / 3) * LAUNCH_S
    epoch = steps * step + evals
    return dict(model=cfg.model, seed=cfg.seed, epochs=cfg.epochs, batch=b,
                gflop_per_image=f_one / 1e9, mb_per_image=b_one / 1e6, mb_fixed=b_fixed / 1e6, ops_per_step=ops,
                compute_ms=compute * 1e3, memory_ms=memory * 1e3, launch_ms=launch * 1e3,
                bound="launch" if launch > compute + memory else "compute+memory",
                s_per_epoch=epoch, run_s=epoch * cfg.epochs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="full")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    import pandas as pd

    seen, rows = {}, []
    for cfg in plan(args.profile):
        key = (cfg.model, cfg.batch_size, cfg.epochs)
        if key not in seen:
            seen[key] = estimate(cfg)
        rows.append({**seen[key], "seed": cfg.seed, "model": cfg.run_id.rsplit("-s", 1)[0].replace("-full", "")})
    df = pd.DataFrame(rows)
    df["cumulative_s"] = df["run_s"].cumsum()
    df = df.round(3)
    if args.markdown:
        print("| " + " | ".join(df.columns) + " |")
        print("|" + "---|" * len(df.columns))
        for row in df.itertuples(index=False):
            print("| " + " | ".join(str(v) for v in row) + " |")
    else:
        pd.set_option("display.width", 200)
        print(df.to_string(index=False))


if __name__ == "__main__":
    main()
