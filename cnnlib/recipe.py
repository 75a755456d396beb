"""The recipe checks: settings of the recipe, chosen on held-out training images.

Before the full study, two nets train for a short schedule (profile ``tune``) on 45,000 training images under each
setting of a check (``config.RECIPE_CHECKS``), and are scored on the 5,000 training images held out; the test set plays
no part. The setting with the best mean held-out accuracy of the check's nets is chosen once and never per model:

* ``shared``: plain20 and resnet20 over ``config.RECIPE_GRID`` (peak lr x weight decay) choose the recipe of every
  family;
* ``seed``: seed_cnn, seed_resnet18 and seed_densenet over three peak learning rates at the shared weight decay choose
  the peak lr of the original report's four models (seed_cnn has no normalisation layers, and the shared choice left it
  at 29%; seed_densenet's full run diverged at the first version's choice).

A setting under which a check's run or a full run of its families diverged (its loss turned NaN: ``results.divergence``)
is never chosen.

A check's choice is recorded as data (``record``: ``config.RECIPE_CHOICE``, committed), and the full profile's configs
read it from there (``config.make_config``). ``train-missing`` records a check's choice once the check is complete, and
trains nothing of a family until the choices of its checks are recorded; a recorded choice is never replaced behind the
study's back: when the stored runs come to choose another setting (a full run diverged under it), the family waits until
someone records the new one (``python -m cnnlib status --profile full --record-recipe``).

Recording a choice never overwrites a stored run (``record``): the families' stored full runs of another setting are
kept as that setting's variant (``results.retag``: ``resnet18-full-s0`` becomes ``resnet18-full-lr0.8_wd0.0005-s0``),
and runs stored as the chosen setting's variant become the families' own. A check that comes after its families'
seed 0 (``later``) and moves their recipe is recorded only once that seed 0 is stored again at the chosen setting,
trained as its variant (``retraining``), so that the notebooks go from one complete family to the other and never
show it half retrained. ``python -m cnnlib status --profile full`` shows the tables.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd

from . import config
from .config import RECIPE_CHECKS, RECIPE_SETTINGS, checks_of, make_config, recorded_choices
from .models import FAMILIES
from .paths import atomic_write, results_root
from .results import Run, divergence, load_run, retag


def nets(check: str = "shared") -> tuple[str, ...]:
    return RECIPE_CHECKS[check]["nets"]


def family_models(check: str = "shared") -> list[str]:
    """The models whose full-profile recipe the check chooses: those of its families that no later, more
    specific check governs (the seed family's peak lr is the seed check's, not the shared one's)."""
    fams = RECIPE_CHECKS[check]["families"]
    return [m for fam, models in FAMILIES.items() if fams is None or fam in fams for m in models
            if checks_of(m)[-1] == check]  # fmt: skip


def configs(check: str = "shared"):
    """The check's runs, setting by setting."""
    return [make_config(net, "tune", 0, tag=tag) for tag in RECIPE_CHECKS[check]["tags"] for net in nets(check)]


def table(runs: dict[str, Run | None] | None = None, check: str = "shared") -> pd.DataFrame:
    """One row per setting: lr, weight decay, each net's final held-out accuracy (NaN while missing or diverged), the
    runs whose loss turned NaN under it ("diverged": the check's nets, and the full runs of its families' models, seed
    0, marked "(full)"; "" if none; "diverged runs": the same as a list) and the nets' mean accuracy (NaN unless all
    of them exist and nothing diverged)."""
    rows = []
    for tag in RECIPE_CHECKS[check]["tags"]:
        setting = RECIPE_SETTINGS[tag]
        row = {"setting": tag, "lr": setting["lr"], "weight decay": setting["weight_decay"]}
        diverged = []
        for net in nets(check):
            cfg = make_config(net, "tune", 0, tag=tag)
            run = runs.get(cfg.run_id) if runs is not None else load_run(cfg)
            ok = run is not None and run.matches(cfg)
            row[f"{net} held-out acc"] = run.final["test_acc"] if ok else math.nan
            if not ok and divergence(cfg) is not None:
                diverged.append(net)
        # a full run of the check's families that diverged under this setting (as the recipe, or as its variant
        # while a later check's families train seed 0 at it: ``retraining``) rules it out as well
        for model in family_models(check):
            full = make_config(model, "full", 0, lr=setting["lr"], weight_decay=setting["weight_decay"])
            if divergence(full) is not None or divergence(dataclasses.replace(full, tag=tag)) is not None:
                diverged.append(f"{model} (full)")
        accs = [row[f"{n} held-out acc"] for n in nets(check)]
        row["diverged"] = ", ".join(diverged)
        row["diverged runs"] = diverged  # the same, as a list (render.check_table asks it net by net)
        row["mean"] = sum(accs) / len(accs) if not diverged and not any(math.isnan(a) for a in accs) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def still_to_train(df: pd.DataFrame, check: str) -> int:
    """Runs of the check still to train: neither stored nor diverged, in settings not ruled out already (a
    setting under which something diverged is out whatever its other runs would say)."""
    return sum(math.isnan(row[f"{net} held-out acc"]) for _, row in df.iterrows() if not row["diverged"]
               for net in nets(check))  # fmt: skip


def choice(df: pd.DataFrame | None = None, check: str = "shared") -> dict | None:
    """The chosen setting ({"setting", "lr", "weight_decay", "mean"}) once every run of the check
    exists or diverged: the best mean among the settings where no net diverged; else None."""
    df = table(check=check) if df is None else df
    if still_to_train(df, check) or df["mean"].isna().all():
        return None
    best = df.loc[df["mean"].idxmax()]
    return dict(setting=best["setting"], lr=float(best["lr"]), weight_decay=float(best["weight decay"]),
                mean=float(best["mean"]))  # fmt: skip


def recorded(check: str = "shared") -> dict | None:
    """The check's recorded choice, which the full profile's configs use; None before it is recorded."""
    return recorded_choices().get(check)


def record(chosen: dict, check: str = "shared") -> None:
    """Record ``chosen`` (``choice``'s dict) as the check's choice: from now on the full profile trains the
    check's families with it (``config.make_config``). No stored run is lost to it: first the families' stored full
    runs of another setting become that setting's variant, then their runs stored as the chosen setting's variant
    become their own (``results.retag``); a run that cannot be moved (another run holds its new name) stops it, with
    nothing recorded. Calling it again after an interruption finishes the moves."""
    for run in earlier_runs(chosen, check):
        retag(run, variant_of(run.config))
    for run in stored_full_runs(check, tag=chosen["setting"]):
        if load_run(dataclasses.replace(run.config, tag="")) is None:
            retag(run, "")
    choices = recorded_choices() | {check: {k: chosen[k] for k in ("setting", "lr", "weight_decay", "mean")}}
    atomic_write(config.RECIPE_CHOICE, json.dumps(choices, indent=2, sort_keys=True) + "\n")


def record_new(check: str = "shared") -> dict | None:
    """Record the check's choice if the check is complete, nothing is recorded for it yet (a recorded choice is never
    replaced here), and no seed 0 of its families is still to train at it (``retraining``); returns what it recorded,
    else None."""
    if recorded(check) is not None or (chosen := choice(check=check)) is None or to_retrain(check):
        return None
    record(chosen, check)
    return chosen


def variant_of(cfg) -> str:
    """The tag of the setting (``config.RECIPE_SETTINGS``) that ``cfg`` trained at: its peak lr and weight decay."""
    for tag, setting in RECIPE_SETTINGS.items():
        if all(math.isclose(getattr(cfg, k), v) for k, v in setting.items()):
            return tag
    raise ValueError(f"{cfg.run_id} trained at peak lr {cfg.lr:g} and weight decay {cfg.weight_decay:g}, a setting "
                     "no recipe check names (config.RECIPE_SETTINGS): it cannot be kept as a variant")


def stored_full_runs(check: str = "shared", tag: str = "") -> list[Run]:
    """The stored full runs, every seed, of the check's families' models: their own (``tag`` "") or those stored as
    the variant ``tag``."""
    infix = f"-{tag}" if tag else ""
    runs = (load_run(folder.name) for model in family_models(check)
            for folder in sorted(results_root().glob(f"{model}-full{infix}-s*")))  # fmt: skip
    return [r for r in runs if r is not None and r.config.tag == tag]


def earlier_runs(chosen: dict, check: str = "shared") -> list[Run]:
    """The check's families' own stored full runs (``stored_full_runs``) that trained at another setting than
    ``chosen``: those its recording keeps as their setting's variant."""
    return [r for r in stored_full_runs(check)
            if not all(math.isclose(getattr(r.config, k), chosen[k]) for k in RECIPE_CHECKS[check]["sets"])]


def retraining(check: str = "shared") -> list:
    """The configs a later check's choice waits for before it is recorded: once the check (one that comes after its
    families' seed 0: ``later``) is complete and its choice differs from the setting its families' stored runs
    trained at, each of its families' models trains seed 0 again at the chosen setting, as that setting's variant
    (densenet121 last, as in every seed of its family). [] when the check is recorded, not complete, or keeps the
    setting (nothing to train again: then it is recorded at once)."""
    if not RECIPE_CHECKS[check].get("later") or recorded(check) is not None or (chosen := choice(check=check)) is None:
        return []
    if not earlier_runs(chosen, check):
        return []
    return [make_config(model, "full", 0, tag=chosen["setting"]) for model in family_models(check)]


def to_retrain(check: str = "shared") -> list:
    """Of ``retraining``'s configs, those neither stored (as the variant, or already moved to the family's own name
    by an interrupted ``record``) nor diverged (a diverged one rules its setting out: ``table``)."""
    return [c for c in retraining(check) if divergence(c) is None and not _stored_either_way(c)]


def _stored_either_way(cfg) -> bool:
    """Whether ``cfg`` (a variant's config) is stored under its own name or already under the family's own one."""
    for stored_as in (cfg, dataclasses.replace(cfg, tag="")):
        run = load_run(stored_as)
        if run is not None and run.matches(stored_as):
            return True
    return False


def applied(chosen: dict, check: str = "shared") -> bool:
    """Whether the full profile trains the check's families with the chosen setting (it is recorded)."""
    have = recorded(check)
    return have is not None and all(math.isclose(have[k], chosen[k]) for k in RECIPE_CHECKS[check]["sets"])


def blocking(df: pd.DataFrame | None = None, check: str = "shared") -> str | None:
    """Why the families of ``check`` must wait, or None: the check still has runs to train (another
    worker may be training them), or it is complete but its choice is not recorded (``record``) as the
    full profile's recipe yet, or the runs now choose another setting than the recorded one."""
    df = table(check=check) if df is None else df
    chosen = choice(df, check)
    name = "recipe check" if check == "shared" else f"{check} family's recipe check"
    if chosen is None and (missing := still_to_train(df, check)):
        return (f"the {name} has {missing} of its {len(nets(check)) * len(df)} runs still to train; its "
                "families start once it is complete and its choice is recorded as the full profile's recipe")
    if chosen is None:
        return (f"every setting of the {name} diverged for one of its nets: try lower learning rates "
                "(config.RECIPE_CHECKS) before its families train")
    if applied(chosen, check):
        return None
    if todo := to_retrain(check):
        earlier = sorted({variant_of(r.config) for r in earlier_runs(chosen, check)})
        return (f"the {name} chose {chosen['setting']} (mean held-out accuracy {100 * chosen['mean']:.2f}%), not "
                f"{' or '.join(earlier)}, at which its families' stored runs trained: their seed 0 trains again at it "
                f"first, as the variant {chosen['setting']} ({len(todo)} of {len(retraining(check))} runs still to "
                f"train); then the choice is recorded, those runs become the families' own, and the runs at "
                f"{' or '.join(earlier)} are kept as that variant")  # fmt: skip
    sets = " and ".join(f"{k}={chosen[k]:g}" for k in RECIPE_CHECKS[check]["sets"])
    have = recorded(check)
    now = "" if have is None else f" instead of the recorded {have['setting']}"
    return (f"the {name} is complete: setting {chosen['setting']} (mean held-out accuracy "
            f"{100 * chosen['mean']:.2f}%) is best{now}; record it ({sets}) as the full profile's recipe "
            f"(python -m cnnlib status --profile full --record-recipe writes it to cnnlib/"
            f"{config.RECIPE_CHOICE.name}) before its families train")
