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

from . import render, verdicts
from .analysis import ORIGINAL_ACCURACY, TARGET_ACCURACY, mean_std
from .constants import ALPHA
from .models import FAMILIES
from .paths import PROJECT_ROOT
from .report import PREFERRED, and_list, run_names
from .results import Run, complete_seeds, list_runs

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


def verdict_frame(runs: list[Run]) -> pd.DataFrame:
    """The verdicts the README and the report's index show, as one verdict frame (``cnnlib.render``) with a column
    ``notebook`` (where each is shown): the degradation family's claims of notebooks 06 and 07 (overfitting,
    degradation, the backward signal at initialisation and at the last probe, the lesions of plain56 against
    resnet56), each as its notebook's table adjusts it, in the richest profile where the family has a complete
    seed, read from the seeds of which all four nets exist (``attrs['profile']``). Empty when none has one."""
    found = _family_runs(runs, list(FAMILIES["degradation"]))
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
    v = verdict_frame(runs)
    if len(v):
        out += [f"Verdicts on the degradation family (profile `{v.attrs['profile']}`, notebooks 06 and 07; each "
                f"notebook table's intervals Holm-adjusted across its claims, family-wise error {100 * ALPHA:g}%):",
                "", render.verdict_table(v, measured=True).rstrip()]  # fmt: skip
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
