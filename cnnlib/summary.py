"""The README's results section and the report's index, computed from the stored runs (never typed in by hand).

``python -m cnnlib readme`` (and ``make refresh``) rewrites the part of README.md between the two markers
below: the answer (``templates/readme_answer.md``, written by a person, its numbers filled from the runs),
the results table of the full profile, one figure, the pilots apart, and the verdicts. A test fails when the
README no longer matches the stored runs, or when a verdict the answer presumes moves. ``cnnlib.report``
builds the index page of the HTML report from the same functions, so the two never disagree. Importing this
module imports no torch (a test checks it), nor the training plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from . import render, verdicts
from .analysis import ORIGINAL_ACCURACY, TARGET_ACCURACY, mean_std
from .constants import ALPHA, GRADIENT_THRESHOLD
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


def _seconds(s: float) -> str:
    return f"{s:.1f}" if s < 100 else f"{s:,.0f}"


def accuracy_rows(runs: list[Run]) -> list[dict]:
    """One row per model and profile (the richest first), family by family: the original report's
    accuracy, ours (mean ± sample std over seeds), how it was trained, and the training time per
    epoch on the device that trained it. ``family`` is the key of ``models.FAMILIES``."""
    rows = []
    for family, models in _families().items():
        for model in models:
            for profile in PREFERRED:
                rs = [r for r in runs if r.config.model == model and r.config.profile == profile and not r.config.tag]
                if not rs:
                    continue
                clean = (mean_std(r.history["clean_train_acc"].iloc[-1] for r in rs)
                         if all("clean_train_acc" in r.history for r in rs) else "not recorded")  # fmt: skip
                orig = ORIGINAL_ACCURACY.get(model)
                devices = list(dict.fromkeys(device(r) for r in rs))
                rows.append({"family": family, "model": f"`{model}`",
                             "original report (%)": f"{100 * orig:.0f}" if orig else "",
                             "target (%)": f"{100 * TARGET_ACCURACY[model]:g}" if profile == "full"
                             and model in TARGET_ACCURACY else "",
                             "test accuracy (%)": mean_std((r.final["test_acc"] for r in rs), seeds=True),
                             "clean training accuracy (%)": clean, "profile": profile,
                             "training images": f"{rs[0].config.n_images()[0]:,}", "epochs": rs[0].final["epochs"],
                             "s / epoch": _seconds(float(np.median([r.final["seconds_per_epoch"] for r in rs]))),
                             "device": ", ".join(devices)})  # fmt: skip
    return rows


ACCURACY_NOTE = ("Final epoch. Test accuracy on the JPEG copy's test images; clean training accuracy: the model in "
                 "eval mode on unaugmented training images, scored as the test images are. Mean ± sample std where "
                 "several seeds exist. Target: what the study expects of the architecture under the full profile, set "
                 "before training; nothing is tuned toward it. s / epoch: median wall time of one training epoch on "
                 "the device named.")


def _models(runs: list[Run]) -> dict[str, SimpleNamespace]:
    """Per model, over its untagged runs of the richest profile it has: the mean final test and clean training
    accuracy (fractions), its seeds and epochs: the numbers the written answers quote."""
    out = {}
    for profile in reversed(PREFERRED):  # the richest profile last, so that it wins
        for model in {r.config.model for r in runs if r.config.profile == profile and not r.config.tag}:
            rs = [r for r in runs if r.config.model == model and r.config.profile == profile and not r.config.tag]
            clean = [r.history["clean_train_acc"].iloc[-1] for r in rs if "clean_train_acc" in r.history]
            out[model] = SimpleNamespace(test=float(np.mean([r.final["test_acc"] for r in rs])),
                                         clean=float(np.mean(clean)) if clean else float("nan"), seeds=len(rs),
                                         epochs=int(rs[0].final["epochs"]), profile=profile)  # fmt: skip
    return out


def claim_verdicts(c: Claims) -> dict[str, SimpleNamespace]:
    """The README's verdicts by claim id, as the written answers presume them. The tables of ``claims`` still hold
    their rows in a fixed order (overfitting; degradation: plain, residual, difference of differences); the verdict
    frame that replaces them carries the ids itself."""
    d = c.degradation
    ids = ["degradation.plain", "degradation.residual", "degradation.diff"][: len(d)]
    return {"overfitting.plain": SimpleNamespace(verdict=c.overfitting["verdict"]),
            **{cid: SimpleNamespace(verdict=verdict) for cid, verdict in zip(ids, d["verdict"], strict=True)}}


def answer(runs: list[Run], name: str = "readme_answer") -> str:
    """The written answer (``templates/<name>.md``) with its numbers filled from ``runs``; a line saying there is
    none yet while the degradation family has no complete seed."""
    c = claims(runs)
    if c is None:
        return "No answer yet: no profile holds a seed of which every net of the degradation family exists.\n"
    text = render.template(name, claim_verdicts(c), m=_models(runs), profile=c.profile)
    return "\n\n".join(" ".join(par.split()) for par in text.split("\n\n") if par.strip()) + "\n"


@dataclass
class Claims:
    """The verdicts the README and the report's index show, computed once: the degradation family's
    tables of notebooks 06 and 07 in the richest profile where the family has a complete seed, read from
    the seeds of which all four nets exist."""

    profile: str
    overfitting: pd.Series
    degradation: pd.DataFrame
    gradients: pd.DataFrame  # the whole table (its attrs: how many claims)
    gradient_rows: pd.DataFrame  # the rows shown: initialisation and the last probe
    lesions: pd.DataFrame  # plain56 against resnet56 (notebook 07's table, so its Holm adjustment)
    runs: list[Run]  # the family's runs they read: its complete seeds in ``profile``


def claims(runs: list[Run]) -> Claims | None:
    found = _family_runs(runs, list(_families()["degradation"]))
    if not found:
        return None
    profile, deg = found
    vg = verdicts.vanishing_gradients(deg)
    shown = vg[vg["point"].isin(["step 0", vg["point"].iloc[-1]])] if len(vg) else vg
    lz = verdicts.lesion_verdicts(deg)
    return Claims(profile, verdicts.overfitting(deg).iloc[0], verdicts.degradation(deg), vg, shown,
                  lz[lz["claim"].str.endswith("than resnet56")] if len(lz) else lz, deg)  # fmt: skip


def _one_net(networks: tuple[int, int] | None) -> str:
    """What a lesion comparison's interval is over (``verdicts.lesion_verdicts``' ``attrs['networks']``
    entry for it): random deletions within one trained network a side (None), or (plain, residual) networks."""
    if networks is None:
        return " (over random deletions within one trained network each)"
    return f" (Welch interval over {networks[0]} and {networks[1]} trained networks)"


def _adjusted(k: int, what: str, intervals: str) -> str:
    """How a table's intervals were drawn, for a verdict line: across seeds and Holm-adjusted over its ``k``
    tested ``what``, or none yet (one seed of a net gives no interval across seeds)."""
    if k == 0:
        return "no interval across seeds yet: a net has one seed"
    adjusted = f", Holm-adjusted across the {k} {what} of notebook 06's table" if k > 1 else ""
    return f"{intervals} across seeds{adjusted}"


def verdict_lines(c: Claims) -> list[str]:
    """The README's verdict lines (Markdown)."""
    o, d, vg = c.overfitting, c.degradation, c.gradients
    out = [f"Verdicts on the degradation family (profile `{c.profile}`, notebooks 06 and 07; each table's "
           f"intervals Holm-adjusted across its claims, family-wise error {100 * ALPHA:g}%):", "",
           f"- *\"Plain CNNs with many layers overfit\"*: **{o['verdict']}**: {o['why']}.",
           f"- Degradation, in clean training error ({_adjusted(d.attrs['claims'], 'claims', 'Welch intervals')}): "
           + "; ".join(f"{r['comparison (clean training error)']} {r['difference']} (**{r['verdict']}**)"
                       for _, r in d.iterrows()) + ". " + d.attrs.get("reading", "")]  # fmt: skip
    if len(c.gradient_rows):
        out.append("- *\"Skip connections avoid vanishing gradients\"*, read off the backward signal "
                   f"(first block / last block, log10; the whole interval below −{GRADIENT_THRESHOLD:g} "
                   f"vanishes, above +{GRADIENT_THRESHOLD:g} grows, within "
                   f"±{GRADIENT_THRESHOLD:g} neither; {_adjusted(vg.attrs['claims'], 'rows', 'intervals')}): "
                   + "; ".join(f"{r['model']} at {r['point']}: {r['log10 [interval]']} (per seed "
                               f"{r['log10 per seed']}; {r['per block']} per block; "
                               f"**{r['signal towards the input']}**)"
                               for _, r in c.gradient_rows.iterrows()) + ".")
    if len(c.lesions):
        nets = c.lesions.attrs["networks"]
        out.append("- Lesions (Veit et al. 2016): " + "; ".join(
            f"{v['claim']}: {v['difference (points)']} points" + _one_net(nets[v["claim"]]) + f" (**{v['verdict']}**"
            + (f"; {v[verdicts.THESE_NETWORKS]}" if v[verdicts.THESE_NETWORKS] else "") + ")"
            for _, v in c.lesions.iterrows()) + ".")
    return out


def verdict_rows(c: Claims) -> list[dict]:
    """The same verdicts as one short table (the report's index): claim, verdict, the evidence in a few
    words, and the notebook that shows it (Markdown cells)."""
    o = c.overfitting
    rows = [{"claim": "*\"Plain CNNs with many layers overfit\"* (plain56 against plain20)", "verdict": o["verdict"],
             "evidence": o["why"].split(";")[0], "notebook": "06"}]
    rows += [{"claim": f"degradation: {r['claim']}", "verdict": r["verdict"],
              "evidence": f"{r['comparison (clean training error)']}: {r['difference']} of clean training error",
              "notebook": "06"} for _, r in c.degradation.iterrows()]  # fmt: skip
    rows += [{"claim": f"*\"Skip connections avoid vanishing gradients\"*: {r['model']}'s backward signal towards "
                       f"the input at {r['point']}", "verdict": r["signal towards the input"],
              "evidence": f"log10 first/last block {r['log10 [interval]']}", "notebook": "06"}
             for _, r in c.gradient_rows.iterrows()]  # fmt: skip
    nets = c.lesions.attrs.get("networks", {})
    rows += [{"claim": f"lesions: {v['claim']}",
              "verdict": v["verdict"] + (f"; {v[verdicts.THESE_NETWORKS]}" if v[verdicts.THESE_NETWORKS] else ""),
              "evidence": f"{v['difference (points)']} points" + _one_net(nets[v["claim"]]), "notebook": "07"}
             for _, v in c.lesions.iterrows()]  # fmt: skip
    return rows


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
    images = {r["training images"] for r in main}
    note = (f"({ACCURACY_NOTE} Every run of this table is of the `full` profile ({', '.join(sorted(images))} "
            "training images); `python -m cnnlib status --profile full` says how far its plan got. This section is "
            "generated from the stored runs by `python -m cnnlib readme`; a test keeps it in step with them.)")
    out = [START, "", answer(runs).strip(), "", render.table(table), note, "",
           f"![Training (dashed) and test (solid) error of plain and residual nets of 20 and 56 layers]({FIGURE})", ""]
    if main and pilots:  # the models with no full run yet: their pilots, apart
        shown = pd.DataFrame(pilots).drop(columns=["family", "original report (%)", "target (%)"], errors="ignore")
        out += ["Not yet trained in the full profile, pilots of the reduced one only (far below what the full profile "
                "reaches):", "", render.table(shown)]  # fmt: skip
    c = claims(runs)
    if c is not None:
        out += verdict_lines(c)
    out += ["", END]
    return "\n".join(out)


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
