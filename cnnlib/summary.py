"""The README's results section and the report's index, computed from the stored runs (never typed in by hand).

``python -m cnnlib readme`` (and ``make refresh``) rewrites the part of README.md between
the two markers below: the "Read this first" paragraph (which profile and device the numbers
come from, and how far the full profile got), the results table and the verdicts. A test fails
when the README no longer matches the stored runs. ``cnnlib.report`` builds the index page of
the HTML report from the same functions, so the two never disagree.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import verdicts
from .analysis import ORIGINAL_ACCURACY, TARGET_ACCURACY, mean_std
from .constants import ALPHA, GRADIENT_THRESHOLD
from .findings import and_list  # until read_first goes
from .models import FAMILIES
from .paths import PROJECT_ROOT
from .results import Run, complete_seeds, list_runs
from .runs import PREFERRED, run_names

START, END = "<!-- results:start (python -m cnnlib readme) -->", "<!-- results:end -->"
README = PROJECT_ROOT / "README.md"
FAMILY_NAMES = {"seed": "the original report's models", "controlled": "the controlled family",
                "degradation": "the degradation family (He et al. 2016)",
                "depth": "the depth sweep (He et al. Fig. 6)"}  # fmt: skip
PILOT = "cpu"  # the reduced profile the study was piloted in


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


def _range(values) -> str:
    v = sorted(set(values))
    return f"{v[0]:,}" if len(v) == 1 else f"{v[0]:,}-{v[-1]:,}"


def accuracy_rows(runs: list[Run]) -> list[dict]:
    """One row per model and profile (the richest first), family by family: the original report's
    accuracy, ours (mean ± sample std over seeds), how it was trained, and the training time per
    epoch on the device that trained it. ``family`` is the key of ``models.FAMILIES``."""
    rows = []
    for family, models in FAMILIES.items():
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


@dataclass
class Standing:
    """Where the study stands, from the stored runs: which models have a run of the full profile, which
    only pilot runs, which devices trained them, and how much of the full plan is stored."""

    full: list[Run]  # untagged runs of the full profile
    pilots: dict[str, list[str]]  # family -> its models that have pilot runs only
    pilot_runs: list[Run]
    missing: list[str]  # models with neither
    devices: list[str]  # every device that trained a stored run
    gpu: list[str]  # those that are GPUs
    plan_done: int
    plan_size: int
    full_images: str
    full_epochs: str


def standing(runs: list[Run]) -> Standing:
    from .plan import plan  # the plan imports the training machinery; only needed here

    untagged = [r for r in runs if not r.config.tag]
    full = [r for r in untagged if r.config.profile == "full"]
    with_full = {r.config.model for r in full}
    pilot_runs = [r for r in untagged if r.config.profile == PILOT and r.config.model not in with_full]
    piloted = {r.config.model for r in pilot_runs}
    pilots = {f: [m for m in ms if m in piloted] for f, ms in FAMILIES.items()}
    missing = [m for ms in FAMILIES.values() for m in ms if m not in with_full | piloted]
    stored = {r.config.run_id: r for r in runs}
    wanted = plan("full")
    done = sum(1 for c in wanted if c.run_id in stored and stored[c.run_id].matches(c))
    study = [c for c in wanted if c.profile == "full"]
    gpu = list(dict.fromkeys(device(r) for r in runs if r.meta.get("device", "cpu").startswith("cuda")))
    return Standing(full, {f: ms for f, ms in pilots.items() if ms}, pilot_runs, missing,
                    list(dict.fromkeys(device(r) for r in runs)), gpu, done, len(wanted),
                    _range(c.n_images()[0] for c in study), _range(c.epochs for c in study))  # fmt: skip


def _families(pilots: dict[str, list[str]]) -> str:
    parts = [FAMILY_NAMES[f] if len(ms) == len(FAMILIES[f]) else ", ".join(f"`{m}`" for m in ms)
             for f, ms in pilots.items()]  # fmt: skip
    return and_list(parts)


def _cpus(names: list[str]) -> str:
    return f"the CPU {names[0]}" if len(names) == 1 else "the CPUs " + ", ".join(names)


def _wrap(text: str, width: int = 80) -> str:
    """``text`` wrapped at ``width``, never inside a code span."""
    spans = re.split(r"(`[^`]*`)", text)
    kept = "".join(p.replace(" ", "\x00") if p.startswith("`") else p for p in spans)
    return textwrap.fill(kept, width, break_long_words=False, break_on_hyphens=False).replace("\x00", " ")


def _held_back(runs: list[Run]) -> str:
    """A sentence on the families' seeds that are stored only in part, so not compared yet."""
    parts = []
    for family, models in FAMILIES.items():
        _, held = complete_seeds(runs, models)
        if held:
            seeds = list(held)
            missing = [m for m in models if any(m in ms for ms in held.values())]
            named = and_list([str(seed) for seed in seeds])
            parts.append(f"seed{'s' if len(seeds) > 1 else ''} {named} of {FAMILY_NAMES[family]} until "
                         + and_list([f"`{m}`" for m in missing]) + f" of {'those seeds' if len(seeds) > 1 else 'it'}"
                         + f" {'land' if len(missing) > 1 else 'lands'}")  # fmt: skip
    if not parts:
        return ""
    return ("A family's seed is compared only once all its members have it, so the notebooks and verdicts leave out "
            + "; ".join(parts) + ". ")


def read_first(runs: list[Run] | None = None) -> str:
    """The README's "Read this first" paragraph (Markdown, one line): which models have a run of the
    full profile, which are still pilots, which devices trained them, and how far the full plan got."""
    runs = list_runs() if runs is None else runs
    s = standing(runs)
    cpus = [d for d in s.devices if d not in s.gpu]
    if not runs:
        trained = "no run is stored yet"
    elif not s.gpu:
        trained = f"no GPU has trained the study yet: every stored run was trained on {_cpus(cpus)}"
    else:
        trained = f"stored runs were trained on {', '.join(s.gpu)}" + (f" and on {_cpus(cpus)}" if cpus else "")
    text = f"**Read this first:** {trained}. "
    protocol = f"all {s.full_images} training images, {s.full_epochs} epochs"
    if s.full:
        n = len({r.config.model for r in s.full})
        text += (f"{n} of the {sum(map(len, FAMILIES.values()))} models {'has' if n == 1 else 'have'} a run of the "
                 f"`full` profile (the report's protocol: {protocol}): {run_names(s.full)}. ")
    else:
        text += f"No model has a run of the `full` profile yet (the report's protocol: {protocol}). "
    if s.pilots:
        n_train = _range(r.config.n_images()[0] for r in s.pilot_runs)
        epochs = _range(int(r.final["epochs"]) for r in s.pilot_runs)
        their = "their" if s.full else "the"  # beside full runs, only the pilots' own numbers are pilot numbers
        text += (f"{'The others' if s.full else 'All'} — {_families(s.pilots)} — are still pilots of the reduced "
                 f"`{PILOT}` profile ({n_train} training images, {epochs} epochs), which shows the pipeline working "
                 f"but settles few claims: {their} numbers and verdicts below are the pilot's until {their} full "
                 "runs land. ")
    text += _held_back(s.full)
    if s.missing:
        text += f"Not yet trained in either profile: {', '.join(f'`{m}`' for m in s.missing)}. "
    if s.plan_done < s.plan_size:
        are = "is" if s.plan_done == 1 else "are"
        text += (f"The `full` profile is being trained on the CPU, run by run ({s.plan_done} of the {s.plan_size} "
                 f"runs of its plan, recipe check included, {are} stored; `python -m cnnlib status --profile full` "
                 "shows progress), and `make refresh` brings each finished run into the notebooks, the README "
                 "and the HTML report; on one GPU, `bash benchmarks/gpu_run.sh` trains the whole plan "
                 "(`benchmarks/RESULTS.md`).")
    else:
        text += f"All {s.plan_size} runs of the `full` profile's plan are stored."
    return text.rstrip()


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
    found = _family_runs(runs, list(FAMILIES["degradation"]))
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
    runs = list_runs() if runs is None else runs
    main, pilots = main_and_pilot_rows(accuracy_rows(runs))
    table = pd.DataFrame(main or pilots).drop(columns=["family", "profile"] if main else "family", errors="ignore")
    first = read_first(runs) + (" This section, this paragraph included, is generated from the stored runs by "
                                "`python -m cnnlib readme`; a test keeps it in step with them.")
    out = [START, "", _wrap(first), "", verdicts.markdown(table), f"({ACCURACY_NOTE})", ""]
    if main and pilots:  # the models with no full run yet: their pilots, apart
        shown = pd.DataFrame(pilots).drop(columns=["family", "original report (%)", "target (%)"], errors="ignore")
        out += ["Not yet trained in the full profile, pilots of the reduced one only (far below what the full profile "
                "reaches):", "", verdicts.markdown(shown), ""]  # fmt: skip
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
