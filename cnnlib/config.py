"""The run configuration and the recipe's presets: what determines a run's result.

``TrainConfig`` is everything that determines a run (the device does not belong here); the profiles (``smoke``, ``cpu``,
``full``, and ``tune`` for the recipe check) and per-family overrides give each model its config through
``make_config``; ``lr_at`` is the one-cycle learning-rate schedule. Training (``cnnlib.train``) and the after-training
tables (``cnnlib.aftertrain``) both build on this module, which imports neither.

The full profile's peak lr and weight decay are the recipe checks' choices (``RECIPE_CHECKS``), read from the data file
``recipe_choice.json`` beside this module, which ``cnnlib.recipe`` writes when a check completes: nobody copies them
here by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .data import CIFAR10, CLASSES, EXPECTED
from .models import check_model, family_of

# Fields added after runs were stored: at these values they are left out of the
# hash, so runs stored before they existed keep their identity.
_ADDED_LATER = {"clean_subset": 10_000, "tag": "", "holdout": 0}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result (the device does not belong here)."""

    model: str  # registry name, e.g. "resnet18"
    profile: str = "full"  # which preset produced this config ("smoke", "cpu", "full", ...)
    epochs: int = 30  # passes over the training subset
    batch_size: int = 512  # images per optimizer step
    lr: float = 0.2  # peak learning rate of the one-cycle schedule, for batch_size images
    warmup: float = 0.15  # fraction of all steps spent warming up linearly from 0 to lr
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 penalty on every parameter, scaled by the lr as in SGD
    label_smoothing: float = 0.1  # target mass spread uniformly over the other classes
    train_subset: int | None = None  # balanced subset of the 50,000 training images; None = all
    test_subset: int | None = None  # balanced subset of the 10,000 test images; None = all
    seed: int = 0  # model initialisation and the data order / augmentation stream
    model_kwargs: tuple[tuple[str, object], ...] = ()  # extra builder arguments, e.g. (("norm", False),)
    clean_subset: int | None = 10_000  # training images (unaugmented) scored after every epoch; None = all
    tag: str = ""  # names a variant of a profile's recipe, e.g. "lr0.1x"; part of the run id
    holdout: int = 0  # balanced training images held out and scored in place of the test set (0: none)

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.holdout < 0 or self.holdout % 10:
            raise ValueError(f"holdout must be 0 or a positive multiple of 10, got {self.holdout}")
        for name in ("train_subset", "test_subset", "clean_subset"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.tag and not self.tag.replace(".", "").replace("_", "").isalnum():
            raise ValueError(f"tag may hold letters, digits, '.' and '_' only, got {self.tag!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model_kwargs"] = dict(self.model_kwargs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model_kwargs"] = tuple(sorted(d.get("model_kwargs", {}).items()))
        return cls(**d)

    @property
    def hash(self) -> str:
        """Short content hash: two configs train the same run iff their hashes match."""
        d = {k: v for k, v in self.to_dict().items() if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def scored(self) -> str:
        """What the run's test_* numbers score: "held-out" training images with ``holdout``, else "test"."""
        return "held-out" if self.holdout else "test"

    @property
    def label(self) -> str:
        """The model, with the variant if any ('plain56 (lr0.1x)'): runs of one label pool their seeds."""
        return label(self.model, self.tag)

    @property
    def variant(self) -> str:
        """The variant in words ('peak lr 0.4 and weight decay 0.0005'); '' for the profile's own recipe."""
        return TAG_NAMES[self.tag] if self.tag else ""

    @property
    def run_id(self) -> str:
        tag = f"-{self.tag}" if self.tag else ""
        return f"{self.model}-{self.profile}{tag}-s{self.seed}"

    def select(self, data: CIFAR10) -> CIFAR10:
        """The images this config trains and tests on: balanced subsets of ``data``, or all of it. With
        ``holdout``, the held-out training images take the test images' place (the test set is not used)."""
        if self.holdout:
            data = data.holdout(self.holdout)
        if not (self.train_subset or self.test_subset):
            return data
        return data.subset(self.train_subset or len(data.train_y), self.test_subset or len(data.test_y))

    def n_images(self, data: CIFAR10 | None = None) -> tuple[int, int]:
        """(training, test) image counts, of ``data`` or of the full CIFAR-10 when not given."""
        if data is None:  # the whole CIFAR-10: EXPECTED images per class, in each of its 10 classes
            n_train, n_test = (len(CLASSES) * EXPECTED[split] for split in ("train", "test"))
            if self.holdout:
                n_train, n_test = n_train - self.holdout, self.holdout
        else:
            n_train, n_test = len(data.train_y), len(data.test_y)
        return self.train_subset or n_train, self.test_subset or n_test

    def n_clean(self, data: CIFAR10 | None = None) -> int:
        """Training images scored unaugmented in eval mode after each epoch: ``clean_subset``, at most all."""
        n_train = self.n_images(data)[0]
        return min(self.clean_subset or n_train, n_train)

    def steps_per_epoch(self, data: CIFAR10 | None = None) -> int:
        """Optimizer steps per epoch: full batches only (the last partial batch is dropped)."""
        return self.n_images(data)[0] // self.batch_size


# Presets. "full" is the report's protocol, meant for a GPU: its epochs per
# family are chosen so that the twelve seed-0 runs fit in 9 minutes of one H200
# (benchmarks/RESULTS.md has the estimate). "cpu" is a reduced protocol that a
# 2-core CPU finishes in minutes per model (1,000-3,000 training images: its
# accuracies are far below the full protocol's). "smoke" takes seconds and
# serves tests and notebook regression. Subsets are balanced across classes.
PROFILES: dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=50, lr=0.05, train_subset=200, test_subset=100),
    "cpu": dict(epochs=6, batch_size=50, lr=0.05, train_subset=1000, test_subset=500),
    # lr and weight decay: the recipe checks' choices (RECIPE_CHECKS, recipe_choice.json; benchmarks/RESULTS.md,
    # "The recipe check"), which make_config sets after the family's overrides
    "full": dict(epochs=20, batch_size=512),
    # the recipe check before the full study: 10 epochs on 45,000 training images, scored on the
    # 5,000 held out (the test set plays no part); one run per setting of RECIPE_GRID
    "tune": dict(epochs=10, batch_size=512, lr=0.2, holdout=5000),
}
# Per-family settings where a profile departs from its defaults. On the CPU the
# thin nets of the degradation family and the depth sweep are cheap enough for
# 3,000 images, where the plain-vs-residual difference starts to show.
_THIN_CPU = dict(epochs=12, batch_size=128, lr=0.1, train_subset=3000, test_subset=1000)
FAMILY_OVERRIDES: dict[str, dict[str, dict]] = {
    "cpu": {"seed": dict(epochs=6), "controlled": dict(epochs=3), "degradation": _THIN_CPU, "depth": _THIN_CPU},
    # The controlled family's 10 epochs (20 before any of its runs): on the 2-core CPUs that train the study,
    # the measured rates put stages 1-4 of the plan far above 24 CPU-hours with 20 (benchmarks/RESULTS.md,
    # "The controlled family's schedule"), so its schedule is halved, for all four of its models alike.
    "full": {"seed": dict(epochs=20), "controlled": dict(epochs=10), "degradation": dict(epochs=40),
             "depth": dict(epochs=40)},
}
# Named variants of a profile's recipe (the ``tag`` of a config): controls that
# change one setting. "lr0.1x": a tenth of the peak learning rate (does plain56
# fail for want of a smaller step?).
TAGS: dict[str, Callable[[dict], dict]] = {"lr0.1x": lambda f: dict(lr=f["lr"] / 10)}
# The recipe check's grid (profile "tune"): peak lr at batch 512 x weight decay. He et al.'s
# lr 0.1 at batch 128 with weight decay 1e-4 is lr 0.4 at batch 512 under linear scaling.
RECIPE_GRID: dict[str, dict] = {
    f"lr{lr:g}_wd{wd:g}": dict(lr=lr, weight_decay=wd)
    for lr, wd in ((0.2, 5e-4), (0.4, 1e-4), (0.4, 5e-4), (0.2, 1e-4), (0.8, 5e-4), (0.8, 1e-4))
}
# The seed family's check goes below the shared grid's lowest lr: its first version (0.2 / 0.4 / 0.8) chose
# 0.2, the lowest it tried, and seed_densenet's full run then diverged at 0.2 (benchmarks/RESULTS.md).
SEED_GRID: dict[str, dict] = {
    f"lr{lr:g}_wd{wd:g}": dict(lr=lr, weight_decay=wd) for lr, wd in ((0.05, 5e-4), (0.1, 5e-4))
}
RECIPE_SETTINGS = RECIPE_GRID | SEED_GRID  # every setting a check may try, by tag
TAGS |= {tag: (lambda f, kw=kw: dict(kw)) for tag, kw in RECIPE_SETTINGS.items()}
# Each variant in words, where a quantity or a caption names it (one per tag: tests/test_train.py).
TAG_NAMES: dict[str, str] = {"lr0.1x": "a tenth of the peak lr"} | {
    tag: f"peak lr {kw['lr']:g} and weight decay {kw['weight_decay']:g}" for tag, kw in RECIPE_SETTINGS.items()}
# The recipe checks: which nets train each setting (profile "tune"), which families take the choice, and
# which fields of the full profile it sets (a later check overrides an earlier one's for its families).
# "shared": plain20 and resnet20 over RECIPE_GRID choose the lr and weight decay of every family. "seed":
# the shared choice (lr 0.8) left seed_cnn, the one net without normalisation layers, at 29%; the family's
# peak lr is chosen again, at the shared weight decay, by the mean held-out accuracy of its three cheaper
# nets. A setting where any net's loss turns NaN is not chosen. Why, check by check: benchmarks/RESULTS.md.
RECIPE_CHECKS: dict[str, dict] = {
    "shared": dict(nets=("plain20", "resnet20"), tags=tuple(RECIPE_GRID), families=None,
                   sets=("lr", "weight_decay")),
    "seed": dict(nets=("seed_cnn", "seed_resnet18", "seed_densenet"),
                 tags=("lr0.05_wd0.0005", "lr0.1_wd0.0005", "lr0.2_wd0.0005"), families=("seed",), sets=("lr",)),
    # "controlled": the shared choice was made on two thin 20-layer nets, never on this family's members, while a
    # published ResNet-18 recipe for CIFAR-10 peaks at lr 0.2. ``later``: the check comes after the family's seed
    # 0 (plan stage 7); until its choice is recorded, the family keeps the earlier checks' recipe, and none of its
    # missing runs trains (``recipe.blocking``).
    "controlled": dict(nets=("resnet18", "plainnet18"), tags=("lr0.2_wd0.0005", "lr0.4_wd0.0005", "lr0.8_wd0.0005"),
                       families=("controlled",), sets=("lr",), later=True),
}
# Each completed check's choice ({"setting", "lr", "weight_decay", "mean"} by check), as recipe.record wrote it.
RECIPE_CHOICE = Path(__file__).with_name("recipe_choice.json")


class RecipeNotChosen(LookupError):
    """The full profile's recipe of a model waits for a recipe check whose choice is not recorded."""


def recorded_choices() -> dict[str, dict]:
    """The recorded choice of each completed recipe check, by check name ({} before any)."""
    try:
        return json.loads(RECIPE_CHOICE.read_text())
    except FileNotFoundError:
        return {}


def checks_of(model: str) -> list[str]:
    """The recipe checks whose choice ``model``'s full-profile recipe depends on, in the order they apply."""
    fam = family_of(model)
    return [name for name, c in RECIPE_CHECKS.items() if c["families"] is None or fam in c["families"]]


def _chosen_recipe(model: str, given: dict) -> dict:
    """The full-profile fields the recipe checks set for ``model`` (peak lr, weight decay); a check whose
    fields are all ``given`` (explicit overrides, as a check's table tries each setting) need not be recorded."""
    recorded, fields = recorded_choices(), {}
    for check in checks_of(model):
        if all(given.get(k) is not None for k in RECIPE_CHECKS[check]["sets"]):
            continue
        if check not in recorded and RECIPE_CHECKS[check].get("later"):
            continue  # the earlier checks' recipe stands until this one's choice is recorded
        if check not in recorded:
            raise RecipeNotChosen(
                f"the full profile's recipe of {model} is the choice of the recipe check {check!r}, which is not "
                f"recorded in {RECIPE_CHOICE.name} (cnnlib/) yet: train the check (python -m cnnlib train-missing "
                "--profile full records its choice once it is complete)")  # fmt: skip
        fields.update({k: recorded[check][k] for k in RECIPE_CHECKS[check]["sets"]})
    return fields


def label(model: str, tag: str = "") -> str:
    """How figures and tables name a model's runs: 'plain56', or with a variant 'plain56 (lr0.1x)'."""
    return model + (f" ({tag})" if tag else "")


def make_config(model: str, profile: str = "full", seed: int = 0, *, tag: str = "", **overrides) -> TrainConfig:
    """The config of ``model`` under a named profile (and variant ``tag``), with explicit overrides on top."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    if tag and tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}; choose from {sorted(TAGS)}")
    check_model(model)  # fails early, with the list of names, on a typo (without building the model: the plan
    # makes hundreds of configs, and building them took most of what status took)
    fields = dict(PROFILES[profile])
    fields.update(FAMILY_OVERRIDES.get(profile, {}).get(family_of(model), {}))
    if profile == "full":
        fields.update(_chosen_recipe(model, overrides))
    if tag:
        fields.update(TAGS[tag](fields))
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(fields.get("model_kwargs"), dict):
        fields["model_kwargs"] = tuple(sorted(fields["model_kwargs"].items()))
    return TrainConfig(model=model, profile=profile, seed=seed, tag=tag, **fields)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """One-cycle schedule: linear warm-up to cfg.lr, then linear decay to 0."""
    warm = max(1, round(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))
