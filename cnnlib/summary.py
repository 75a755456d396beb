"""The README's results section, computed from the stored runs (never typed in by hand).

``python -m cnnlib readme`` (and ``make refresh``) rewrites the part of README.md between
the two markers below; a test fails when the README no longer matches the stored runs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import verdicts
from .analysis import ORIGINAL_ACCURACY, mean_std
from .models import FAMILIES
from .paths import PROJECT_ROOT
from .report import PREFERRED
from .results import Run, list_runs

START, END = "<!-- results:start (python -m cnnlib readme) -->", "<!-- results:end -->"
README = PROJECT_ROOT / "README.md"


def _profile(runs: list[Run], models: list[str]) -> str | None:
    """The richest profile in which every model has a run."""
    for p in PREFERRED:
        have = {r.config.model for r in runs if r.config.profile == p and not r.config.tag}
        if set(models) <= have:
            return p
    return None


def _accuracy_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for model in [m for fam in FAMILIES.values() for m in fam]:
        for profile in PREFERRED:
            rs = [r for r in runs if r.config.model == model and r.config.profile == profile and not r.config.tag]
            if not rs:
                continue
            text = mean_std((r.final["test_acc"] for r in rs), seeds=True)
            clean = (mean_std(r.history["clean_train_acc"].iloc[-1] for r in rs)
                     if all("clean_train_acc" in r.history for r in rs) else "not recorded")  # fmt: skip
            n_train, _ = rs[0].config.n_images()
            orig = ORIGINAL_ACCURACY.get(model)
            rows.append({"model": f"`{model}`", "profile": profile, "training images": f"{n_train:,}",
                         "epochs": rs[0].final["epochs"], "clean training accuracy (%)": clean,
                         "test accuracy (%)": text,
                         "device": rs[0].meta["device_name"].split(" (")[0].removeprefix("CPU: "),
                         "original report (%)": f"{100 * orig:.0f}" if orig else ""})  # fmt: skip
    return rows


def readme_block(runs: list[Run] | None = None) -> str:
    runs = list_runs() if runs is None else runs
    out = [START, "", verdicts.markdown(pd.DataFrame(_accuracy_rows(runs))),
           "(Final epoch. Clean training accuracy: the model in eval mode on unaugmented training images, scored "
           "as the test images are. Test accuracy on the JPEG copy's test images. Mean ± sample std where several "
           "seeds exist.)", ""]
    deg_profile = _profile(runs, list(FAMILIES["degradation"]))
    if deg_profile:
        deg = [r for r in runs if r.config.profile == deg_profile and r.config.model in FAMILIES["degradation"]
               and not r.config.tag]  # fmt: skip
        d = verdicts.degradation(deg)
        o = verdicts.overfitting(deg).iloc[0]
        out += [f"Verdicts on the degradation family (profile `{deg_profile}`, notebooks 06 and 07; each table's "
                f"intervals Holm-adjusted across its claims, family-wise error {100 * verdicts.ALPHA:g}%):", "",
                f"- *\"Plain CNNs with many layers overfit\"*: **{o['verdict']}**: {o['why']}.",
                f"- Degradation, in clean training error (Welch intervals across seeds, Holm-adjusted across the "
                f"{d.attrs['claims']} claims of notebook 06's table): "
                + "; ".join(f"{r['comparison (clean training error)']} {r['difference']} (**{r['verdict']}**)"
                            for _, r in d.iterrows()) + ". " + d.attrs.get("reading", "")]  # fmt: skip
        vg = verdicts.vanishing_gradients(deg)
        if len(vg):
            end = vg["point"].iloc[-1]
            rows = vg[vg["point"].isin(["step 0", end])]
            out.append("- *\"Skip connections avoid vanishing gradients\"*, read off the backward signal "
                       f"(first block / last block, log10; the whole interval below −{verdicts.GRADIENT_THRESHOLD:g} "
                       f"vanishes, above +{verdicts.GRADIENT_THRESHOLD:g} explodes, within "
                       f"±{verdicts.GRADIENT_THRESHOLD:g} neither; intervals across seeds, Holm-adjusted across the "
                       f"{vg.attrs['claims']} rows of notebook 06's table): "
                       + "; ".join(f"{r['model']} at {r['point']}: {r['log10 [interval]']} "
                                   f"(**{r['signal towards the input']}**)" for _, r in rows.iterrows()) + ".")
        lz = verdicts.lesion_verdicts(deg)  # notebook 07's table, so its Holm adjustment
        lz = lz[lz["claim"].str.endswith("than resnet56")]
        if len(lz):
            out.append("- Lesions (Veit et al. 2016): " + "; ".join(
                f"{v['claim']}: {v['difference (points)']} points"
                + (" (over random deletions within one trained network each)"
                   if "within one network" in v["interval from"] else "") + f" (**{v['verdict']}**"
                + (f"; {v[verdicts.THESE_NETWORKS]}" if v[verdicts.THESE_NETWORKS] else "") + ")"
                for _, v in lz.iterrows()) + ".")
    out += ["", END]
    return "\n".join(out)


def update_readme(path: Path = README) -> bool:
    """Rewrite the results block of the README; True if it changed."""
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path} lacks the markers {START!r} and {END!r}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + readme_block() + tail
    if new != text:
        path.write_text(new)
    return new != text
