"""What the notebooks need to find their runs, and ``make report``.

A notebook asks for runs by model and seed; ``resolve_profile`` picks the
profile (``CNNLIB_PROFILE``, the notebook's parameter, or the best profile whose
runs all exist), and ``get_run`` loads a stored run. A missing run is trained
only where that is cheap or wanted: on a GPU, in the smoke profile, or when
``CNNLIB_TRAIN_ON_CPU=1``. Otherwise the notebook says what is missing and
which command produces it, instead of starting hours of CPU training.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from .paths import figures_root
from .results import Run, fit_or_load, load_run
from .train import PROFILES, make_config

PREFERRED = ("full", "cpu")  # the richest profile first
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def may_train(profile: str) -> bool:
    return profile == "smoke" or torch.cuda.is_available() or os.environ.get("CNNLIB_TRAIN_ON_CPU") == "1"


def resolve_profile(requested: str | None, models: list[str], seeds=(0,)) -> str:
    """The profile a notebook shows: $CNNLIB_PROFILE, else ``requested``, else the
    first of PREFERRED whose runs of ``models`` all exist, else "full"."""
    chosen = os.environ.get("CNNLIB_PROFILE") or requested
    if chosen:
        make_config(models[0], chosen)  # validates the name
        return chosen
    for profile in PREFERRED:
        if all(load_run(make_config(m, profile, s)) for m in models for s in seeds):
            return profile
    return "full"


def get_run(model: str, profile: str, seed: int = 0) -> Run | None:
    """The stored run, trained first if allowed here; None (with a note) if missing."""
    cfg = make_config(model, profile, seed)
    retrain = os.environ.get("CNNLIB_RETRAIN", "") not in ("", "0")
    run = load_run(cfg)
    if run is not None and run.matches(cfg) and not retrain:
        return run
    if may_train(profile):
        return fit_or_load(cfg, retrain=run is not None or retrain)
    print(f"missing run {cfg.run_id}: produce it with `python -m cnnlib train {model} --profile {profile} "
          f"--seed {seed}` (meant for a GPU; set CNNLIB_TRAIN_ON_CPU=1 to train here anyway)")  # fmt: skip
    return None


class MissingRuns(RuntimeError):
    """Runs a notebook needs are not stored, and training them here was not asked for."""


def get_runs(models: list[str], profile: str, seeds=(0,), *, required: bool = True) -> list[Run]:
    """Every run of ``models`` x ``seeds``.

    ``required=True``: missing runs are trained where allowed, else reported,
    and the notebook stops with MissingRuns instead of plotting half.
    ``required=False``: only the runs already stored are returned (extra seeds
    are shown when they exist, never trained by a notebook).
    """
    if not required:
        wanted = [make_config(m, profile, s) for m in models for s in seeds]
        runs = [(cfg, load_run(cfg)) for cfg in wanted]
        return [r for cfg, r in runs if r is not None and r.matches(cfg)]
    runs = [get_run(m, profile, s) for m in models for s in seeds]
    if any(r is None for r in runs):
        raise MissingRuns(f"{sum(r is None for r in runs)} run(s) of profile '{profile}' are missing (listed "
                          "above); produce them, or choose another PROFILE")  # fmt: skip
    return runs


def run_names(runs: list[Run]) -> str:
    """Runs named compactly: one entry per model (and variant) with its seeds, e.g.
    '`plainnet18` (seeds 0, 1, 2)'."""
    seeds: dict[str, list[int]] = {}
    for r in runs:
        seeds.setdefault(r.config.model + (f"-{r.config.tag}" if r.config.tag else ""), []).append(r.config.seed)
    return ", ".join(f"`{m}` (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))})"
                     for m, s in seeds.items())  # fmt: skip


def how_trained(run: Run) -> str:
    """Precision, memory format, compiled or not and threads of a run, from its ``run.json``; runs stored
    before the engine was recorded trained in fp32 NCHW eager on a CPU, bf16 channels_last on CUDA."""
    e = run.meta.get("engine")
    if e is None:
        cuda = run.meta.get("device", "cpu").startswith("cuda")
        return "bf16 autocast, channels_last, eager" if cuda else "fp32, NCHW, eager"
    fmt = "channels_last" if e["channels_last"] else "NCHW"
    precision = "bf16 autocast" if e["precision"] == "bf16" else e["precision"]
    return f"{precision}, {fmt}, {'compiled' if e['compiled'] else 'eager'}, {e['threads']} thread(s)"


def provenance(runs: list[Run]) -> str:
    """One Markdown line per distinct (profile, device, engine, data) that produced ``runs``."""
    seen: dict[tuple, list[Run]] = {}
    for r in runs:
        c = r.config
        n_train, n_test = c.n_images()
        key = (c.profile, r.meta["device_name"], how_trained(r), r.meta["torch"],
               f"{n_train:,} training / {n_test:,} test images")  # fmt: skip
        seen.setdefault(key, []).append(r)
    return "\n".join(
        f"- profile '{p}' ({d}; JPEG copy of CIFAR-10), trained on {dev} ({how}) with torch {t}: {run_names(rs)}"
        for (p, dev, how, t, d), rs in seen.items()
    )


class NotebookFailed(RuntimeError):
    """A notebook raised while ``build_report`` executed it (one line: which, where, what)."""


def _execute(path: Path, timeout: int = 3600):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOKS)}}
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources,
                       extra_arguments=["--IPKernelApp.log_level=ERROR"]).execute()  # no transport warnings
    except CellExecutionError as e:
        cell = next((i for i, c in enumerate(nb.cells) if c.get("outputs") and any(
            o.get("output_type") == "error" for o in c["outputs"])), None)  # fmt: skip
        raise NotebookFailed(f"{path.name}, cell {cell}: {e.ename}: {e.evalue}") from None
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:  # execution timestamps would change every cell of every notebook on each refresh
        cell.metadata.pop("execution", None)
    return nb


def _html(nb, exporter) -> str:
    """The notebook as HTML, with links to sibling notebooks pointing at their pages."""
    html, _ = exporter.from_notebook_node(nb)
    return re.sub(r'href="(?:\./)?(\d\d_[\w-]+)\.ipynb', r'href="\1.html', html)


def build_report(profile: str | None = None, out: str | Path = "report", *, in_place: bool = False) -> Path:
    """Execute every notebook (training what is missing only where allowed) and export
    them as HTML with an index page into ``out``.

    The committed notebooks are left as they are unless ``in_place`` (``make refresh``):
    then their executed versions replace them, e.g. after new runs landed. The data are
    checked once before any notebook runs, and a failing notebook ends the report with
    one line naming it, its cell and its error.
    """
    chosen = profile or os.environ.get("CNNLIB_PROFILE")
    if chosen and chosen not in PROFILES:  # before any data check or kernel start
        source = "" if profile else " (from CNNLIB_PROFILE)"
        raise ValueError(f"unknown profile {chosen!r}{source}; choose from {', '.join(sorted(PROFILES))}")

    import logging
    import warnings

    import nbformat
    from nbconvert import HTMLExporter

    from .data import load_cifar10

    warnings.filterwarnings("ignore", message=".*without encryption.*")
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    load_cifar10()  # DataError (one line, how to fix it) before any kernel starts
    if profile:
        os.environ["CNNLIB_PROFILE"] = profile
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not in_place:  # the kernels save their figures with the report, not over the committed ones
        os.environ["CNNLIB_FIGURES"] = str(out / "figures")
    exporter = HTMLExporter()
    pages = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        print(f"executing {path.name} ...", flush=True)
        nb = _execute(path)
        if in_place:
            nbformat.write(nb, path)
        (out / f"{path.stem}.html").write_text(_html(nb, exporter))
        title = next((c.source.splitlines()[0].lstrip("# ") for c in nb.cells if c.cell_type == "markdown"), path.stem)
        pages.append((path.stem, title))
    figures = figures_root()
    if figures.exists() and figures != out / "figures":
        shutil.copytree(figures, out / "figures", dirs_exist_ok=True)
    from .results import list_runs

    runs = list_runs()
    items = "\n".join(f'<li><a href="{stem}.html">{title}</a></li>' for stem, title in pages)
    origin = "".join(f"<li>{line.removeprefix('- ').replace('`', '')}</li>" for line in provenance(runs).splitlines())
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>cnnlib report</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;line-height:1.5}"
        "img{max-width:100%}figcaption{font-size:.9em;color:#444}</style></head><body>"
        "<h1>How do networks with and without skip connections differ in training?</h1>"
        "<p>A CIFAR-10 study of a plain CNN, ResNet, DenseNet and SE-ResNet. Each page is an executed notebook.</p>"
        f"<ol>{items}</ol><figure><img src='figures/06_degradation.png' "
        "alt='training and test error of plain and residual nets of 20 and 56 layers'>"
        "<figcaption>Training (dashed) and test (solid) error of plain and residual nets of 20 and 56 "
        "layers against epochs, mean over the stored seeds; notebook 06 says which profile and how many "
        "images.</figcaption></figure>"
        f"<h2>Where the numbers come from</h2><ul>{origin}</ul>"
        "</body></html>\n"
    )
    print(f"report written to {out / 'index.html'}")
    return out / "index.html"
