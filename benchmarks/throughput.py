"""Training throughput: cnnlib's chosen engine against its plain fp32 path and a reference loop.

chosen     the real ``cnnlib.train.fit`` on a ``train_subset`` of ``--images`` images: uint8
           images on the device, crop+flip+normalise on the device (``DeviceLoader``),
           SGD Nesterov with the one-cycle lr set per step, label-smoothing cross entropy,
           per-stage diagnostics (``StageProbe``), with the engine ``cnnlib.engine.choose``
           picks (bf16 + channels_last on CUDA; on a CPU what its measured check found
           fastest). Images/s is fit's own ``images_per_s`` (training loop only; the
           per-epoch evaluation and checkpoint are not timed).
fp32       the same ``fit`` with the plain engine: fp32, NCHW, eager (the CPU path before the
           engine existed).
reference  the torchvision CIFAR10 style: a ``Dataset`` over HWC uint8 numpy images whose
           ``__getitem__`` builds a PIL image and applies RandomCrop(32, 4),
           RandomHorizontalFlip, ToTensor, Normalize; ``DataLoader(batch_size=128,
           shuffle=True, num_workers=2)``; fp32, SGD momentum, plain cross entropy, the same
           model. Timed over the same number of images after a few warm-up batches.

All three run in one process, interleaved (the order rotates every round), so background load
affects them alike. The fit sides are warmed up once before the rounds (one untimed fit step of
the same shapes); the reference skips its first batches (worker start-up, warm-up) in every round.

    python benchmarks/throughput.py --model resnet18 --images 2048 --device auto --batch-size 512
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout, installed or not
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from cnnlib.config import make_config  # noqa: E402
from cnnlib.data import CIFAR10, load_cifar10  # noqa: E402
from cnnlib.engine import Engine, choose  # noqa: E402
from cnnlib.models import create_model  # noqa: E402
from cnnlib.train import fit, stepper  # noqa: E402


class HWCDataset(Dataset):
    """torchvision.datasets.CIFAR10's layout and __getitem__: HWC uint8 -> PIL -> transform."""

    def __init__(self, data: np.ndarray, targets: list[int], transform):
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        return self.transform(img), self.targets[i]


def reference_loader(data: CIFAR10, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(data.mean, data.std),
    ])  # fmt: skip
    ds = HWCDataset(np.ascontiguousarray(data.train_x.numpy().transpose(0, 2, 3, 1)),
                    data.train_y.tolist(), tf)
    # persistent_workers: in a short benchmark the per-epoch worker start-up would otherwise
    # weigh far more than it does in a real 50,000-image epoch (it favours the reference).
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_round(model_name: str, data: CIFAR10, device: torch.device, *, batch_size: int,
                    workers: int, images: int, warmup_batches: int, seed: int) -> dict:
    """Images/s of the common loop over `images` images, after `warmup_batches` untimed ones."""
    torch.manual_seed(seed)
    model = create_model(model_name).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = reference_loader(data, batch_size, workers, device)
    seen, batches = 0, 0
    t0 = time.perf_counter() if warmup_batches <= 0 else None
    while seen < images:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            batches += 1
            if batches <= warmup_batches:
                if batches == warmup_batches:
                    _sync(device)
                    t0 = time.perf_counter()
                continue
            seen += len(y)
            if seen >= images:
                break
    _sync(device)
    seconds = time.perf_counter() - t0
    del loader  # stops the persistent workers
    return dict(images=seen, seconds=seconds, images_per_s=seen / seconds)


def ours_round(model_name: str, data: CIFAR10, device: torch.device, *, batch_size: int,
               images: int, epochs: int, seed: int, engine: Engine) -> dict:
    """Images/s of cnnlib.train.fit over a train_subset of `images` images (all epochs timed)."""
    cfg = make_config(model_name, "full", seed, epochs=epochs, batch_size=batch_size,
                      train_subset=images, test_subset=10)
    # fit alone: the tables measured on the trained weights (results.measure_tables) are not training
    result = fit(cfg, data=data, device=device, engine=engine, resume=False, verbose=False)
    h = result.history
    seen = float((h["images_per_s"] * h["seconds"]).sum())
    seconds = float(h["seconds"].sum())
    return dict(images=round(seen), seconds=seconds, images_per_s=seen / seconds,
                device_name=result.info["device_name"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--images", type=int, default=2048,
                   help="images timed per round and side (rounded up to a multiple of 10 for "
                        "the balanced subset; ours drops the last partial batch)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=512, help="ours (the recipe's batch size)")
    p.add_argument("--ref-batch-size", type=int, default=128, help="the reference's batch size")
    p.add_argument("--workers", type=int, default=2, help="the reference's DataLoader workers")
    p.add_argument("--warmup-batches", type=int, default=3, help="untimed reference batches per round")
    p.add_argument("--ours-warmup-steps", type=int, default=1,
                   help="untimed fit steps once before the rounds (0: none)")
    p.add_argument("--epochs", type=int, default=1, help="fit epochs per round (all timed)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    n = 10 * math.ceil(args.images / 10)  # the balanced subset takes n/10 images per class
    if n < max(1, args.ours_warmup_steps) * args.batch_size:
        p.error(f"--images {args.images} is less than --ours-warmup-steps (or one) batches of "
                f"--batch-size {args.batch_size}")
    # fit checkpoints every epoch: keep that out of the repo's checkpoints/ and never resume
    ckpt = tempfile.mkdtemp(prefix="cnnlib-bench-ckpt-")
    atexit.register(shutil.rmtree, ckpt, ignore_errors=True)
    os.environ["CNNLIB_CHECKPOINTS"] = ckpt

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t_load = time.perf_counter()
    data = load_cifar10().subset(n, 10)
    _ = data.mean  # computed once, outside any timing
    print(f"data: {data.source} ({time.perf_counter() - t_load:.1f} s)", flush=True)
    ours_images = (n // args.batch_size) * args.batch_size * args.epochs  # fit drops the last partial batch
    common = dict(data=data, device=device, seed=args.seed)

    # ours' warm-up, untimed: fit over --ours-warmup-steps batches of the rounds' shapes. The
    # reference warms up inside each round (its first --warmup-batches batches are not timed).
    engines = {"chosen": choose(device, args.model, args.batch_size, stepper=stepper),
               "fp32": Engine(str(device), "fp32", False, False, torch.get_num_threads(), "plain fp32")}
    print(f"chosen engine: {engines['chosen'].describe()} ({engines['chosen'].reason})", flush=True)
    if args.ours_warmup_steps:
        warm = data.subset(10 * math.ceil(args.ours_warmup_steps * args.batch_size / 10), 10)
        for side, eng in engines.items():
            t = time.perf_counter()
            fit(make_config(args.model, "full", args.seed, epochs=1, batch_size=args.batch_size,
                            train_subset=len(warm.train_y), test_subset=10),
                data=warm, device=device, engine=eng, resume=False, verbose=False)
            print(f"{side} warm-up: {time.perf_counter() - t:.1f} s", flush=True)

    rows, device_name = [], None
    sides = ["chosen", "fp32", "reference"]
    for r in range(args.rounds):
        order = sides[r % 3:] + sides[:r % 3]
        for side in order:
            if side in engines:
                res = ours_round(args.model, batch_size=args.batch_size, images=n,
                                 epochs=args.epochs, engine=engines[side], **common)
                device_name = res.pop("device_name")
            else:
                res = reference_round(args.model, images=ours_images, batch_size=args.ref_batch_size,
                                      workers=args.workers, warmup_batches=args.warmup_batches, **common)
            rows.append(dict(round=r + 1, side=side, **res))
            print(f"round {r + 1} {side:<9} {res['images']:>6} images in {res['seconds']:7.2f} s "
                  f"= {res['images_per_s']:8.1f} images/s", flush=True)

    rounds = pd.DataFrame(rows)
    med = rounds.groupby("side")["images_per_s"].median()
    settings = {
        "chosen": f"cnnlib.train.fit, DeviceLoader, batch {args.batch_size}, {engines['chosen'].describe()}",
        "fp32": f"cnnlib.train.fit, DeviceLoader, batch {args.batch_size}, {engines['fp32'].describe()}",
        "reference": (f"PIL Dataset + DataLoader(workers={args.workers}), batch "
                      f"{args.ref_batch_size}, fp32"),
    }
    table = pd.DataFrame({
        "setting": settings,
        "images/s": {k: round(float(med[k]), 1) for k in settings},
        "rounds": {k: ", ".join(f"{v:.1f}" for v in rounds.loc[rounds.side == k, "images_per_s"])
                   for k in settings},
    })  # fmt: skip
    ratio = float(med["chosen"] / med["reference"])
    ratio_fp32 = float(med["chosen"] / med["fp32"])
    by_round = rounds.pivot(index="round", columns="side", values="images_per_s")
    paired = (by_round["chosen"] / by_round["reference"]).round(3).tolist()  # same round, same load
    paired_fp32 = (by_round["chosen"] / by_round["fp32"]).round(3).tolist()
    print()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {args.model} | device {device} ({device_name}) | torch {torch.__version__} | "
          f"{ours_images} images per round and side, {args.rounds} rounds (median) | "
          f"load average {load_start:.1f} at start, {load:.1f} at end | torch threads "
          f"{torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(table.to_string())
    print(f"ratio chosen/reference: {ratio:.2f}x (of the medians; per round: "
          f"{', '.join(f'{r:.2f}' for r in paired)})")
    print(f"ratio chosen/fp32: {ratio_fp32:.2f}x (of the medians; per round: "
          f"{', '.join(f'{r:.2f}' for r in paired_fp32)})")

    if args.json:
        out = dict(
            model=args.model, device=str(device), device_name=device_name,
            torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
            date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            images_per_round=ours_images, rounds=args.rounds, epochs=args.epochs,
            chosen=dict(setting=settings["chosen"], batch_size=args.batch_size,
                        images_per_s=float(med["chosen"]), engine=engines["chosen"].record()),
            fp32=dict(setting=settings["fp32"], batch_size=args.batch_size, images_per_s=float(med["fp32"])),
            reference=dict(setting=settings["reference"], batch_size=args.ref_batch_size,
                           workers=args.workers, warmup_batches=args.warmup_batches,
                           images_per_s=float(med["reference"])),
            ratio=ratio, ratio_per_round=paired, ratio_fp32=ratio_fp32, ratio_fp32_per_round=paired_fp32,
            per_round=rows, load_average=[load_start, load],
            torch_threads=torch.get_num_threads(),
            omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        )  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
