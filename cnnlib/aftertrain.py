"""What the notebooks need from trained weights, measured while the weights are in hand.

Weights never enter the repository: a run folder holds small tables instead, and a fresh clone renders every notebook
from them. This module owns those tables and their file names, the policy of which weights are kept locally
(``weights_root()``, git-ignored), and the measurements behind them:

* during training (``Monitor``), on one fixed batch of clean training images, at ``PROBE_STEPS`` and ``probe_epochs``:
  per weight layer the gradient and weight norms and the relative update, per block the backward signal. This is how the
  early blow-up of a plain net's stem is seen as it happens;
* on the trained weights (``finish``, called by ``cnnlib.results.measure_tables``): the layer responses of He et al.
  2016, Fig. 7, and for the ``dissected`` runs the mechanism tables of notebook 07 (``mechanism_tables``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn

from . import diagnostics
from .config import RECIPE_SETTINGS
from .models import create_model, family_of
from .models.resnet import BasicBlock
from .paths import atomic_write, weights_root

if TYPE_CHECKING:
    from .config import TrainConfig

WEIGHTS_MAX_PARAMS = 2_000_000  # keep the final weights of models up to this size (resnet56: 0.85M)
PROBE_STEPS = (0, 1, 5, 20)  # optimizer steps after which the gradient profile is measured (0 = init)
PROBE_IMAGES = 256  # the fixed batch of clean training images the profile is measured on (at most)
MONITORED_FAMILIES = ("degradation", "depth")  # where the gradient story is told (notebooks 06, 07)
# table name -> file in the run folder
TABLES = {
    "layers": "gradients_layers.csv",  # per weight layer and probe point
    "blocks": "gradients_blocks.csv",  # per block and probe point
    "responses": "responses.csv",  # per BasicBlock, trained net, test images
    # the mechanism experiments of notebook 07 (cnnlib.mechanisms), thin nets, trained weights:
    "lesion_single": "lesion_single.csv",  # test accuracy with each block deleted
    "lesion_random": "lesion_random.csv",  # ... with k random blocks deleted, 10 draws per k
    "path_gradients": "path_gradients.csv",  # gradient through paths of each length (residual nets)
    "surface_1d": "surface_1d.csv",  # training loss along one filter-normalised direction
    "surface_2d": "surface_2d.csv",  # ... on a grid of two directions
    "interpolation": "interpolation.csv",  # ... on the line from the initial to the trained weights
}
SURFACE_IMAGES = 1000  # clean training images the landscapes are evaluated on (at most)


def dissected(cfg: TrainConfig) -> bool:
    """Whether a run stores the mechanism tables of notebook 07: every seed of the thin nets (the degradation family and
    the depth sweep, ``MONITORED_FAMILIES``; each trained network is one replicate of the lesion study), trained with
    the recipe itself or at a recipe check's setting (``RECIPE_SETTINGS``: the learning-rate control, ``LR_CONTROL``,
    is one; a run of such a variant may become the recipe's own when a check's choice is recorded, ``recipe.record``),
    not with another variant such as lr0.1x.

    The line from the initial weights has been measured right (BatchNorm statistics recomputed at each point) only
    since every recipe run of the degradation family had trained, without kept weights; the runs of the lr control and
    of the depth sweep still to train are those that can measure it. The lr control's seeds 0 and 1, and plain20's
    seed 2, trained before they were added here and lack the tables."""
    return monitored(cfg.model) and (cfg.tag == "" or cfg.tag in RECIPE_SETTINGS)


def mechanism_settings(n_train: int, device: torch.device) -> dict:
    """How finely the mechanism tables are measured: on a GPU a 21 x 21 landscape and lesions on
    1,000 images; on a CPU 7 x 7 and lesions on 500 (about 4 CPU minutes for plain56); 5 x 5
    with 3 lesion draws on 50 images for smoke runs (they test that the tables are made, not what
    they say: on 200 images these tables took most of a smoke run's time, and of the tests')."""
    if n_train < 1000:
        return dict(grid=5, draws=3, max_k=5, images=50, path_images=16, path_samples=2, path_every=9)
    if device.type == "cuda":
        return dict(grid=21, draws=10, max_k=10, images=1000, path_images=256, path_samples=10, path_every=1)
    return dict(grid=7, draws=10, max_k=10, images=500, path_images=64, path_samples=4, path_every=3)


def mechanism_passes(model: str, settings: dict) -> int:
    """Single-image forward passes that ``mechanism_tables`` costs with ``settings`` (a
    backward pass counted as two): lesions, gradients by path length and the landscapes."""
    from .mechanisms import residual_blocks

    blocks = len(residual_blocks(create_model(model)))
    s, n = settings, min(settings["images"], SURFACE_IMAGES)
    lesions = (blocks + 1 + min(s["max_k"], blocks) * s["draws"]) * s["images"]
    paths = (len(range(0, blocks + 1, s["path_every"])) + 1) * s["path_samples"] * min(s["path_images"], n) * 3
    surfaces = (2 * (4 * s["grid"] + 1) + s["grid"] ** 2) * n
    return lesions + paths + surfaces


def monitored(model: str) -> bool:
    """Whether runs of ``model`` measure gradient profiles while training (the thin nets)."""
    return family_of(model) in MONITORED_FAMILIES


def probe_images(n_train: int) -> int:
    """Size of the probe batch: PROBE_IMAGES, or an eighth of a small training set (the
    profile's cost stays a few percent of training: a smoke run on 200 images probes 25)."""
    return min(PROBE_IMAGES, max(10, n_train // 8))


def probe_epochs(epochs: int) -> list[int]:
    """Epochs after which the gradient profile is measured: 1, a quarter, a half, the last."""
    return sorted({e for e in (1, epochs // 4, epochs // 2, epochs) if 1 <= e <= epochs})


class Monitor:
    """Measures the gradient profile of the model being trained at the probe points.

    A rider of ``cnnlib.train.fit`` (the methods of ``cnnlib.train.Callback``; its rows go into a checkpoint).
    ``images``/``labels``: the clean (unaugmented, normalised) probe batch on the training device.
    """

    key = "monitor"  # its slot in a checkpoint

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, epochs: int):
        self.x, self.y = images, labels
        self.epochs = set(probe_epochs(epochs))
        self.layers: list[dict] = []
        self.blocks: list[dict] = []

    def on_step(self, step: int, model: nn.Module, lr: float) -> None:
        if step in PROBE_STEPS:
            self._measure(model, f"step {step}", step, lr)

    def on_epoch_end(self, epoch: int, step: int, model: nn.Module, lr: float) -> dict:
        if epoch in self.epochs:
            self._measure(model, f"epoch {epoch}", step, lr, epoch)
        return {}  # its rows are tables of their own, not history columns

    def after_epoch(self, row: dict) -> None:
        pass

    def _measure(self, model: nn.Module, point: str, step: int, lr: float, epoch: float = float("nan")) -> None:
        point = dict(point=point, step=step, epoch=epoch, lr=lr, probe_classes=int(self.y.unique().numel()))
        layers = diagnostics.gradient_norms(model, self.x, self.y)
        layers["update"] = lr * layers["relative"]  # the relative step plain SGD would take
        self.layers += [{**point, **r} for r in layers.to_dict("records")]
        blocks = diagnostics.backward_signal(model, self.x, self.y)
        self.blocks += [{**point, **r} for r in blocks.to_dict("records")]

    def state(self) -> dict:
        return dict(layers=self.layers, blocks=self.blocks)

    def load_state(self, state: dict | None) -> None:
        if state:
            self.layers, self.blocks = list(state["layers"]), list(state["blocks"])

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"layers": pd.DataFrame(self.layers), "blocks": pd.DataFrame(self.blocks)}


def finish(model: nn.Module, test_batches) -> dict[str, pd.DataFrame]:
    """The table every trained net of BasicBlocks keeps: its layer responses on the test images (the ``dissected``
    runs add the ``mechanism_tables``)."""
    if not any(isinstance(m, BasicBlock) for m in model.modules()):
        return {}
    return {"responses": diagnostics.response_std_over_loader(model, test_batches)}


def mechanism_tables(model: nn.Module, init_state: dict, clean: tuple, test: tuple, *, grid: int = 9,
                     draws: int = 10, max_k: int = 10, images: int = SURFACE_IMAGES, path_images: int = 256,
                     path_samples: int = 10,
                     path_every: int = 1, seed: int = 0) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Notebook 07's measurements of a trained thin net (see ``cnnlib.mechanisms``), with ``clean`` and ``test``
    (images, labels) on its device, and the initial weights ``init_state``.

    Lesions on the first ``images`` test images; the gradient by path length (residual nets) on ``path_images`` clean
    training images, every ``path_every``-th length; the loss landscapes (a 1D slice of 4 * grid + 1 points and a grid x
    grid contour over [-1, 1] along filter-normalised directions) and the line from the initial weights, on the first
    ``images`` clean training images (at most SURFACE_IMAGES).
    """
    from . import mechanisms

    (xc, yc), (xt, yt) = clean, test
    n = min(images, SURFACE_IMAGES)
    xc, yc, xt, yt = xc[:n], yc[:n], xt[:images], yt[:images]
    single = mechanisms.lesion_single(model, xt, yt)
    out = {"lesion_single": single.assign(intact=single.attrs["intact"])}  # a CSV keeps no attrs
    deletable = int(single["accuracy"].notna().sum())
    if deletable:
        out["lesion_random"] = mechanisms.lesion_random(model, xt, yt, ks=range(1, min(max_k, deletable) + 1),
                                                        draws=draws, seed=seed).assign(intact=single.attrs["intact"])
    blocks = mechanisms.residual_blocks(model)
    if all(getattr(b, "shortcut", None) is not None for _, b in blocks):
        lengths = sorted({*range(0, len(blocks) + 1, path_every), len(blocks)})
        out["path_gradients"] = mechanisms.gradient_by_path_length(
            model, xc[:path_images], yc[:path_images], samples=path_samples, lengths=lengths, seed=seed)
    g = torch.Generator(device=xc.device).manual_seed(seed)
    d1 = mechanisms.filter_normalized_direction(model, g)
    d2 = mechanisms.filter_normalized_direction(model, g)
    out["surface_1d"] = mechanisms.loss_surface(model, xc, yc, d1, steps=4 * grid + 1)
    out["surface_2d"] = mechanisms.loss_surface(model, xc, yc, d1, d2, steps=grid)
    out["interpolation"] = mechanisms.interpolation(init_state, model, xc, yc, steps=4 * grid + 1)
    return out


def fingerprint(model: nn.Module) -> float:
    """Sum of squares of every parameter (float64): checks that an initialisation is reproduced."""
    with torch.no_grad():
        return float(sum(p.detach().double().square().sum() for p in model.parameters()))


def weights_path(run_id: str) -> Path:
    return weights_root() / run_id / "model.pt"


def save_weights(run_id: str, state_dict: dict) -> Path | None:
    """Keep the final weights of a small model under weights_root() (never committed)."""
    n = sum(v.numel() for k, v in state_dict.items() if not k.endswith(("running_mean", "running_var",
                                                                        "num_batches_tracked")))
    if n > WEIGHTS_MAX_PARAMS:
        return None
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    path = weights_path(run_id)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


class WeightsUnavailable(FileNotFoundError):
    """A stored run's weights are not on this machine, or do not load (one line: where, and how to get them)."""


def load_weights(run) -> nn.Module:
    """The trained network of a stored run (eval mode, CPU), from weights_root().

    Weights are not part of the repository: they exist where the run was trained (or where
    the GPU run's weights archive was unpacked). The error says how to get them.
    """
    path = weights_path(run.config.run_id)
    c = run.config
    retrain = (f"retrain with `python -m cnnlib train {c.model} --profile {c.profile} --seed {c.seed}"
               f"{f' --tag {c.tag}' if c.tag else ''} --retrain`")  # fmt: skip
    if not path.exists():
        raise WeightsUnavailable(f"no weights for {c.run_id} at {path}: weights are kept only for models up to "
                                 f"{WEIGHTS_MAX_PARAMS:,} parameters, on the machine that trained them. "
                                 f"R{retrain[1:]}, or unpack the GPU run's weights archive at the repository "
                                 "root.")  # fmt: skip
    model = create_model(c.model, **dict(c.model_kwargs))
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 -- torch raises many kinds for a cut or garbled file
        raise WeightsUnavailable(f"the weights {path} of {c.run_id} are damaged ({type(e).__name__}); "
                                 f"{retrain}") from None  # fmt: skip
    return model.eval()
