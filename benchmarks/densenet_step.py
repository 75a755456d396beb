"""Where densenet121's training step goes, and whether running its 1x1 convolutions as matrix products, or compiling
its dense layers alone, helps.

Four steps side by side, each the recipe's (forward, label-smoothing loss, backward, SGD with Nesterov: what
``cnnlib.train.stepper`` builds) on random images, eager, batch 128: ``resnet18``, ``densenet121`` (the registry's
net) and two variants of it with the same parameters and initialisation: ``densenet121 1x1-mm``, whose 1x1
convolutions (each dense layer's bottleneck and each transition) run as ``F.linear`` over the channels_last bytes,
which on channels_last memory is the same product (N*H*W, C_in) @ (C_in, C_out) without a copy, and ``densenet121
compiled layers``, whose 58 dense layers are each compiled (``torch.compile``: BatchNorm, ReLU and the convolutions
of a layer, forward and backward, in one graph where Inductor may fuse the memory-bound passes) while the rest of
the net stays eager. Every step is warmed up (a compiled layer compiles in its first steps),
then timed in rounds: a round times one step of every model and setting in a shuffled order, so that the load
other processes put on the cores falls on all of them alike. Printed per setting: the median and least seconds
per step, images/s, GFLOP/s (3 x the forward multiply-adds per image, torchinfo, x batch / seconds), each as a
fraction of resnet18's, the process's CPU seconds per step, and the variant's time over the registry net's in
the same round. ``--profile`` prints instead where each densenet121 step goes (``torch.profiler``): per operator,
the least self time over ``--profile-steps`` profiled steps (on a shared machine the least is the operator's own
cost, the rest is waiting for a core). Comparisons hold only inside one run. Run on an otherwise idle machine:

    OMP_NUM_THREADS=2 python benchmarks/densenet_step.py --settings bf16+cl fp32+cl
    OMP_NUM_THREADS=2 python benchmarks/densenet_step.py --profile
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from cnnlib import engine  # noqa: E402
from cnnlib.analysis import model_costs  # noqa: E402
from cnnlib.engine import Engine, bf16_features, cpu_name  # noqa: E402
from cnnlib.models.densenet import DenseLayer  # noqa: E402
from cnnlib.train import TrainConfig, build, stepper  # noqa: E402

SETTINGS = {"bf16+cl": ("bf16", True), "bf16": ("bf16", False), "fp32+cl": ("fp32", True), "fp32": ("fp32", False)}


class MatmulConv1x1(nn.Conv2d):
    """A bias-free 1x1, stride-1 ``nn.Conv2d`` that runs as a matrix product on channels_last input (NCHW input
    takes the convolution's own path). Same weight, hooks and initialisation: set as an existing module's class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last):
            return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1)).permute(0, 3, 1, 2)
        return super().forward(x)


def as_matmul(model: nn.Module) -> int:
    """Turn every bias-free 1x1 stride-1 convolution of ``model`` into a ``MatmulConv1x1``; returns how many."""
    convs = [m for m in model.modules() if type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1)
             and m.groups == 1 and m.bias is None]  # fmt: skip
    for m in convs:
        m.__class__ = MatmulConv1x1
    return len(convs)


def compile_layers(model: nn.Module) -> int:
    """Compile each dense layer of ``model`` in place (``nn.Module.compile``); returns how many. The layers share one
    forward, which Dynamo compiles once per input shape (each layer's width is its own, and asked for dynamic shapes it
    still specialised them) and past its recompile limit (8) runs eagerly: the limit is raised so that every layer
    keeps its graph, in eval mode and in training."""
    layers = [m for m in model.modules() if isinstance(m, DenseLayer)]
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 8 * len(layers))
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit,
                                                           8 * len(layers))  # fmt: skip
    for m in layers:
        m.compile()
    return len(layers)


VARIANTS = {"densenet121 1x1-mm": (as_matmul, "1x1 convolutions run as matrix products"),
            "densenet121 compiled layers": (compile_layers, "dense layers compiled")}  # fmt: skip
MODELS = ("resnet18", "densenet121", *VARIANTS)


def step_of(name: str, batch: int, eng: Engine):
    """``cnnlib.train.stepper``'s step; a variant's edit is made after the model is built."""
    return stepper(name.split()[0], batch, eng, edit=VARIANTS[name][0] if name in VARIANTS else None)  # seed 0


def same_outputs(eng: Engine, variants: list[str]) -> dict[str, float]:
    """Per variant, the largest difference between its logits and the registry densenet121's on one batch (eval
    mode, fp32, channels_last): a variant computes the same function, up to the order of floating-point sums."""
    x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    out = {}
    for name in ["densenet121", *variants]:
        model, _ = build(TrainConfig("densenet121"), Engine("cpu", "fp32", True, False, eng.threads))
        if name in VARIANTS:
            edit, what = VARIANTS[name]
            print(f"{name}: {edit(model)} {what}", flush=True)
        with torch.no_grad():
            out[name] = model.eval()(x)
    a = out.pop("densenet121")
    return {name: float((b - a).abs().max() / a.abs().max()) for name, b in out.items()}


def timed(steps: dict, rounds: int, warmup: int) -> tuple[dict, dict, float | None]:
    """Wall and CPU seconds of every timed step, per (model, setting), and the other processes' share of the cores."""
    order = list(steps)
    for _ in range(warmup):  # oneDNN's primitive creation and the allocator's first calls, untimed
        for key in order:
            steps[key]()
    wall, cpu = collections.defaultdict(list), collections.defaultdict(list)
    with engine._LoadMeter() as load:
        for r in range(rounds):
            random.Random(r).shuffle(order)
            for key in order:
                t0, c0 = time.perf_counter(), time.process_time()
                steps[key]()
                wall[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return wall, cpu, load.others_share


def report(wall: dict, cpu: dict, batch: int, settings: list[str], models: list[str]) -> None:
    macs = {m: model_costs(m.split()[0])["macs"] for m in models}
    for s in settings:
        print(f"\n{s}:\n  {'model':20s} {'median s':>9s} {'least s':>8s} {'images/s':>9s} {'GFLOP/s':>8s} "
              f"{'of resnet18':>11s} {'CPU s':>7s}")  # fmt: skip
        rate = {m: 3 * macs[m] * batch / statistics.median(wall[m, s]) / 1e9 for m in models}
        for m in models:
            med = statistics.median(wall[m, s])
            frac = f"{rate[m] / rate['resnet18']:.2f}" if "resnet18" in rate else "-"
            print(f"  {m:20s} {med:9.2f} {min(wall[m, s]):8.2f} {batch / med:9.1f} {rate[m]:8.1f} {frac:>11s} "
                  f"{statistics.median(cpu[m, s]):7.2f}")  # fmt: skip
        for variant in (v for v in VARIANTS if v in models and "densenet121" in models):
            ratios = [a / b for a, b in zip(wall[variant, s], wall["densenet121", s], strict=True)]
            print(f"  {variant} over densenet121, per round: {' '.join(f'{r:.2f}' for r in ratios)}; median "
                  f"{statistics.median(ratios):.3f}, {sum(r < 1 for r in ratios)} of {len(ratios)} rounds faster")


def profile(steps: dict, k: int, warmup: int, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for key, step in steps.items():
        for _ in range(warmup):
            step()
        runs = []
        for _ in range(k):
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                step()
                wall = time.perf_counter() - t0
            runs.append(([(e.name, e.self_cpu_time_total) for e in prof.events()], wall))
        # the same step runs the same operators in the same order: per position, the least time over the steps
        least, calls = collections.Counter(), collections.Counter()
        for i in range(min(len(r) for r, _ in runs)):
            names = {r[i][0] for r, _ in runs}
            if len(names) == 1:
                name = names.pop()
                least[name] += min(r[i][1] for r, _ in runs)
                calls[name] += 1
        total = sum(least.values())
        print(f"\n{key[0]}, {key[1]}: {k} profiled steps of {', '.join(f'{w:.2f}' for _, w in runs)} s; the sum of "
              f"each operator's least self time over them {total / 1e6:.2f} s:")  # fmt: skip
        for name, us in least.most_common(top):
            print(f"  {name[:58]:58s} {us / 1e3:8.0f} ms {100 * us / total:5.1f}%  {calls[name]:4d} calls")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--settings", nargs="+", default=["bf16+cl"], choices=list(SETTINGS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="print where each densenet121 step goes instead")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    print(f"{cpu_name()}, {os.cpu_count()} cores, hardware bf16: {', '.join(bf16_features()) or 'none'}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, eager", flush=True)
    variants = [m for m in args.models if m in VARIANTS]
    for name, diff in same_outputs(Engine("cpu", "fp32", True, False, torch.get_num_threads()), variants).items():
        print(f"{name}'s logits against the registry net's: largest difference {diff:.1e} of the largest logit")
    load0 = os.getloadavg()[0]
    steps = {}
    for s in args.settings:
        eng = Engine("cpu", *SETTINGS[s], False, torch.get_num_threads())
        for m in args.models if not args.profile else [m for m in args.models if m != "resnet18"]:
            steps[m, s] = step_of(m, args.batch_size, eng)
    if args.profile:
        profile(steps, args.profile_steps, args.warmup, args.top)
        print(f"\nload average (1 min) {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
        return 0
    wall, cpu, others = timed(steps, args.rounds, args.warmup)
    print(f"{args.rounds} rounds after {args.warmup} warm-up steps; load average (1 min) {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; other processes used "
          f"{'?' if others is None else f'{others:.0%}'} of the cores meanwhile")  # fmt: skip
    report(wall, cpu, args.batch_size, args.settings, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
