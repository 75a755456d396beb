"""The README's results section and the report's index, computed from the stored runs (never typed in by hand).

``python -m cnnlib readme`` (and ``make refresh``) rewrites the part of README.md between the two markers
below: the answer (``templates/readme_answer.md``, written by a person, its numbers filled from the runs),
the results table of the full profile, one figure, the pilots apart, and the verdicts. A test fails when the
README no longer matches the stored runs, or when a verdict the answer presumes moves. ``cnnlib.report``
builds the index page of the HTML report from the same functions, so the two never disagree. Importing this
module imports no torch (a test checks it), nor the training plan.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from . import render, verdicts
from .analysis import ORIGINAL_ACCURACY, TARGET_ACCURACY
from .constants import ALPHA, LR_CONTROL
from .paths import PROJECT_ROOT
from .results import Run, complete_seeds, list_runs
from .runs import PREFERRED

START, END = "<!-- results:start (python -m cnnlib readme) -->", "<!-- results:end -->"
README = PROJECT_ROOT / "README.md"
FIGURE = "figures/06_degradation.png"  # the one figure of what skip connections change (notebook 06 draws it)
FAMILY_NAMES = {"seed": "the original report's models", "controlled": "the controlled family",
                "degradation": "the degradation family (He et al. 2016)",
                "depth": "the depth sweep (He et al. Fig. 6)"}  # fmt: skip


def _families() -> dict[str, tuple[str, ...]]:
    from .models import FAMILIES  # the registry builds the models, so it imports torch: only when asked

    return FAMILIES


def _family_runs(runs: list[Run], models: list[str]) -> tuple[str, list[Run]] | None:
    """The richest profile in which the family has a complete seed, and its runs of the complete seeds
    (a family's seed counts only when all its members exist; variants such as lr/10 left out)."""
    for p in PREFERRED:
        kept, _ = complete_seeds([r for r in runs if r.config.profile == p and not r.config.tag], models)
        if kept:
            return p, kept
    return None


def device(run: Run) -> str:
    """The device that trained a run, as its ``run.json`` names it (without the 'CPU: ' prefix)."""
    return run.meta["device_name"].removeprefix("CPU: ")


def _by_profile(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """(model, profile) -> its runs; variants (a tag, such as lr0.1x) left out."""
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        if not r.config.tag:
            out.setdefault((r.config.model, r.config.profile), []).append(r)
    return out


def accuracy_rows(runs: list[Run]) -> list[dict]:
    """One row per model and profile (the richest first), family by family: the original report's
    accuracy, ours (mean ± sample std over seeds), how it was trained, and the training time per
    epoch on the device that trained it. ``family`` is the key of ``models.FAMILIES``."""
    rows, groups = [], _by_profile(runs)
    for family, models in _families().items():
        for model in models:
            for profile in PREFERRED:
                if not (rs := groups.get((model, profile))):
                    continue
                clean = (render.mean_std(r.history["clean_train_acc"].iloc[-1] for r in rs)
                         if all("clean_train_acc" in r.history for r in rs) else "not recorded")  # fmt: skip
                orig = ORIGINAL_ACCURACY.get(model)
                target = TARGET_ACCURACY.get(model) if profile == "full" else None
                target = round(100 * target, 1) if target else None
                seconds = float(np.median([r.final["seconds_per_epoch"] for r in rs]))
                rows.append({"family": family, "model": f"`{model}`",
                             "original report (%)": render.num(100 * orig, 0) if orig else "",
                             "target (%)": render.num(target, 0 if target.is_integer() else 1) if target else "",
                             "test accuracy (%)": render.mean_std((r.final["test_acc"] for r in rs), seeds=True),
                             "clean training accuracy (%)": clean, "profile": profile,
                             "training images": render.num(rs[0].config.n_images()[0], 0),
                             "epochs": rs[0].final["epochs"],
                             "s / epoch": render.num(seconds, 1 if seconds < 100 else 0),
                             "device": ", ".join(dict.fromkeys(device(r) for r in rs))})  # fmt: skip
    return rows


ACCURACY_NOTE = ("Final epoch. Test accuracy on the JPEG copy's test images; clean training accuracy: the model in "
                 "eval mode on unaugmented training images, scored as the test images are. Mean ± sample std where "
                 "several seeds exist. Target: what the study expects of the architecture under the full profile, set "
                 "before training; nothing is tuned toward it. s / epoch: median wall time of one training epoch on "
                 "the device named.")


def _models(runs: list[Run]) -> dict[str, SimpleNamespace]:
    """Per model, over its untagged runs of the richest profile it has: the mean final test and clean training
    accuracy (fractions), its seeds and epochs: the numbers the written answers quote."""
    groups, out = _by_profile(runs), {}
    for profile in reversed(PREFERRED):  # the richest profile last, so that it wins
        for model in [m for m, p in groups if p == profile]:
            rs = groups[model, profile]
            clean = [r.history["clean_train_acc"].iloc[-1] for r in rs if "clean_train_acc" in r.history]
            out[model] = SimpleNamespace(test=float(np.mean([r.final["test_acc"] for r in rs])),
                                         clean=float(np.mean(clean)) if clean else float("nan"), seeds=len(rs),
                                         epochs=int(rs[0].final["epochs"]), profile=profile)  # fmt: skip
    return out


def answer(runs: list[Run], name: str = "readme_answer") -> str:
    """The written answer (``templates/<name>.md``) with its numbers filled from ``runs``; a line saying there is
    none yet while the degradation family has no complete seed."""
    v = verdict_frame(runs)
    if not len(v):
        return "No answer yet: no profile holds a seed of which every net of the degradation family exists.\n"
    text = render.template(name, render.claims(v, low_rate(runs, v.attrs["profile"])), m=_models(runs),
                           profile=v.attrs["profile"])  # fmt: skip
    return "\n\n".join(" ".join(par.split()) for par in text.split("\n\n") if par.strip()) + "\n"


def verdict_frame(runs: list[Run]) -> pd.DataFrame:
    """The verdicts the README and the report's index show, as one verdict frame (``cnnlib.render``) with a column
    ``notebook`` (where each is shown): the degradation family's claims of notebooks 06 and 07 (overfitting,
    degradation, the backward signal at initialisation and at the last probe, the lesions of plain56 against
    resnet56), each as its notebook's table adjusts it, in the richest profile where the family has a complete
    seed, read from the seeds of which all four nets exist (``attrs['profile']``). Empty when none has one."""
    found = _family_runs(runs, list(_families()["degradation"]))
    if not found:
        return pd.DataFrame()
    profile, deg = found
    vg = verdicts.vanishing_gradients(deg)
    lz = verdicts.lesion_verdicts(deg)
    frame = pd.concat([verdicts.overfitting(deg).assign(notebook="06"), verdicts.degradation(deg).assign(notebook="06"),
                       vg[vg["step"].isin([0, vg["step"].max()])].assign(notebook="06") if len(vg) else None,
                       lz[(lz["a"] == "plain56") & (lz["b"] == "resnet56")].assign(notebook="07") if len(lz) else None],
                      ignore_index=True)  # fmt: skip
    frame.attrs["profile"] = profile
    return frame


def low_rate(runs: list[Run], profile: str) -> pd.DataFrame:
    """Notebook 06's degradation test at He et al.'s peak lr (the variant ``LR_CONTROL``) in ``profile``, over the
    seeds of which all four nets exist (ids ``degradation.*@<tag>``): what the written answers quote of it. The
    verdict table keeps to the shared recipe's claims (the index's first screen has room for those); notebook 06
    shows these rows beside them. Empty without a complete seed."""
    kept, _ = complete_seeds([r for r in runs if r.config.profile == profile and r.config.tag == LR_CONTROL],
                             list(_families()["degradation"]))  # fmt: skip
    return verdicts.degradation(kept, tag=LR_CONTROL) if kept else pd.DataFrame()


def main_and_pilot_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """``accuracy_rows`` split for the reader: the rows of the study's own profile (``full``, with their seed
    counts), and the pilot rows of the models that have no run of it yet (the pilots of the others are
    shown in the notebooks, not beside their full runs)."""
    with_full = {r["model"] for r in rows if r["profile"] == "full"}
    main = [r for r in rows if r["profile"] == "full"]
    pilots = [r for r in rows if r["profile"] != "full" and r["model"] not in with_full]
    return main, pilots


def readme_block(runs: list[Run] | None = None) -> str:
    """The README's generated section: the answer, the full profile's results with a short note, the figure, the
    pilots apart, the verdicts."""
    runs = list_runs() if runs is None else runs
    main, pilots = main_and_pilot_rows(accuracy_rows(runs))
    table = pd.DataFrame(main or pilots).drop(columns=["family", "profile", "training images"] if main else "family",
                                              errors="ignore")  # fmt: skip
    v = verdict_frame(runs)
    pilots = pd.DataFrame(pilots).drop(columns=["family", "original report (%)", "target (%)"], errors="ignore")
    return render.template(
        "readme_block", start=START, end=END, answer=answer(runs).strip(), table=render.table(table),
        accuracy_note=ACCURACY_NOTE, images=", ".join(sorted({r["training images"] for r in main})), figure=FIGURE,
        pilots=render.table(pilots) if main and len(pilots) else "", alpha=ALPHA,
        verdicts=render.verdict_table(v, measured=True).rstrip() if len(v) else "",
        profile=v.attrs.get("profile")).rstrip("\n")  # fmt: skip


def update_readme(path: Path = README) -> bool:
    """Rewrite the generated block of the README; True if it changed."""
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path} lacks the markers {START!r} and {END!r}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + readme_block() + tail
    if new != text:
        path.write_text(new)
    return new != text
