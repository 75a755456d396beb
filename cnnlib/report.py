"""What the notebooks need to find their runs, and ``make report``.

A notebook asks for runs by model and seed; ``resolve_profile`` picks the
profile (``CNNLIB_PROFILE``, the notebook's parameter, or the best profile whose
runs all exist), and ``get_run`` loads a stored run. A missing run is trained
only where that is cheap or wanted: on a GPU, in the smoke profile, or when
``CNNLIB_TRAIN_ON_CPU=1``. Otherwise the notebook says what is missing and
which command produces it, instead of starting hours of CPU training.
"""

from __future__ import annotations

import html as html_lib
import os
import re
import shutil
import time
from pathlib import Path

import torch

from .config import PROFILES, make_config
from .paths import figures_root
from .results import Run, complete_seeds, fit_or_load, load_run

PREFERRED = ("full", "cpu")  # the richest profile first
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def may_train(profile: str) -> bool:
    return profile == "smoke" or torch.cuda.is_available() or os.environ.get("CNNLIB_TRAIN_ON_CPU") == "1"


def stored(cfg) -> bool:
    """Whether a run of exactly ``cfg`` is stored (one of another config, e.g. an older recipe, is not)."""
    run = load_run(cfg)
    return run is not None and run.matches(cfg)


def resolve_profile(requested: str | None, models: list[str], seeds=(0,)) -> str:
    """The profile a notebook shows: $CNNLIB_PROFILE, else ``requested``, else the
    first of PREFERRED whose runs of ``models`` all exist (with today's config), else "full"."""
    chosen = os.environ.get("CNNLIB_PROFILE") or requested
    if chosen:
        make_config(models[0], chosen)  # validates the name
        return chosen
    for profile in PREFERRED:
        if all(stored(make_config(m, profile, s)) for m in models for s in seeds):
            return profile
    return "full"


def get_run(model: str, profile: str, seed: int = 0) -> Run | None:
    """The stored run, trained first if allowed here; None (with a note) if missing."""
    cfg = make_config(model, profile, seed)
    retrain = os.environ.get("CNNLIB_RETRAIN", "") not in ("", "0")
    run = None if retrain and may_train(profile) else load_run(cfg)  # a damaged run stops here, unless retrained
    if run is not None and run.matches(cfg) and not retrain:
        return run
    if may_train(profile):
        return fit_or_load(cfg, retrain=run is not None or retrain)
    print(f"missing run {cfg.run_id}: produce it with `python -m cnnlib train {model} --profile {profile} "
          f"--seed {seed}` (meant for a GPU; set CNNLIB_TRAIN_ON_CPU=1 to train here anyway)")  # fmt: skip
    return None


class MissingRuns(RuntimeError):
    """Runs a notebook needs are not stored, and training them here was not asked for."""


def and_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def get_runs(models: list[str], profile: str, seeds=(0,), *, required: bool = True) -> list[Run]:
    """Every run of ``models`` x ``seeds``.

    ``required=True``: missing runs are trained where allowed, else reported,
    and the notebook stops with MissingRuns instead of plotting half.
    ``required=False``: only the runs already stored are returned (extra seeds
    are shown when they exist, never trained by a notebook), and of those only
    the seeds that every one of ``models`` has: a family's seed is compared
    only when all its members exist, and a seed held back is named.
    """
    if not required:
        wanted = [make_config(m, profile, s) for m in models for s in seeds]
        runs = [(cfg, load_run(cfg)) for cfg in wanted]
        kept, held = complete_seeds([r for cfg, r in runs if r is not None and r.matches(cfg)], models)
        for seed, missing in held.items():
            print(f"seed {seed} is held back until {and_list(missing)} of it {'is' if len(missing) == 1 else 'are'} "
                  f"stored in profile '{profile}' (a family's seed is compared only when all of {and_list(models)} "
                  "exist)")
        return kept
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


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) while ``build_report`` ran: the notebook's kernel was interrupted, and the report
    and the committed notebooks and figures were left as they were (the message says where)."""


class _Interrupts:
    """While notebooks execute, Ctrl-C interrupts the running kernel (as Jupyter's interrupt button does)
    instead of tearing down the client in the middle of its messages, which left three tracebacks. A second
    Ctrl-C stops at once."""

    def __init__(self):
        self.asked, self.client = False, None

    def __enter__(self):
        import signal

        self._before = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        import signal

        for s, handler in self._before.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        provisioner = getattr(getattr(self.client, "km", None), "provisioner", None)
        pgid = getattr(provisioner, "pgid", None)
        if pgid:  # the kernel runs in a session of its own: Ctrl-C in the terminal does not reach it
            import signal

            try:
                os.killpg(pgid, signal.SIGINT)
            except OSError:
                pass


def _client_class():
    from contextlib import asynccontextmanager

    from nbclient import NotebookClient

    class Client(NotebookClient):
        """nbclient's client without its own SIGINT and SIGTERM handlers, which shut the kernel down under the
        running cell (the kernel and the client then print tracebacks); ``_Interrupts`` interrupts the cell."""

        @asynccontextmanager
        async def async_setup_kernel(self, **kwargs):
            if self.km is None:
                self.km = self.create_kernel_manager()
            if not self.km.has_kernel:
                await self.async_start_new_kernel(**kwargs)
            if self.kc is None:
                await self.async_start_new_kernel_client()
            try:
                yield
            finally:
                await self._async_cleanup_kernel()

    return Client


def _execute(path: Path, timeout: int = 3600, interrupts: _Interrupts | None = None):
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    client = _client_class()(nb, timeout=timeout, kernel_name="python3", resources=resources,
                             extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no transport warnings
    if interrupts is not None:
        interrupts.client = client
    try:
        client.execute()
    except CellExecutionError as e:
        if interrupts is not None and interrupts.asked:
            raise KeyboardInterrupt from None
        cell = next((i for i, c in enumerate(nb.cells) if c.get("outputs") and any(
            o.get("output_type") == "error" for o in c["outputs"])), None)  # fmt: skip
        raise NotebookFailed(f"{path.name}, cell {cell}: {e.ename}: {e.evalue}") from None
    finally:
        if interrupts is not None:  # the kernel is gone: its process group id may soon be another's
            interrupts.client = None
    if interrupts is not None and interrupts.asked:  # the notebook ended before the interrupt reached it
        raise KeyboardInterrupt
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:  # execution timestamps would change every cell of every notebook on each refresh
        cell.metadata.pop("execution", None)
    return nb


# The notebook pages: the code hidden (every Markdown cell and output kept), no prompts, and a text column a
# laptop screen reads comfortably.
PAGE_CSS = """
:root { --jp-content-font-size1: 16px; --jp-content-line-height: 1.6; --jp-ui-font-size1: 15px;
        --jp-content-font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
body.jp-Notebook { max-width: 64rem; margin: 0 auto; padding: 1rem 1.5rem 4rem; }
.jp-Cell { padding: 0.2rem 0; }
.jp-RenderedHTMLCommon { padding-right: 0; }
.jp-RenderedHTMLCommon p, .jp-RenderedHTMLCommon li { max-width: 48rem; }
.jp-RenderedHTMLCommon table { font-size: 0.9rem; display: block; overflow-x: auto; max-width: 100%; }
.jp-RenderedImage img, .jp-OutputArea-output img { max-width: 100%; height: auto; }
.jp-OutputArea-output pre { font-size: 0.85rem; white-space: pre-wrap; }
nav.report { font: 15px/1.5 system-ui, sans-serif; margin: 0 0 1rem; padding: 0.5rem 0; border-bottom: 1px solid #ddd;
             color: #444; }
"""


def exporter():
    """nbconvert's HTML exporter for the report's pages: code cells show their outputs only."""
    from nbconvert import HTMLExporter

    return HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)


def _html(nb, exporter, stem: str | None = None) -> str:
    """The notebook as HTML, with links to sibling notebooks pointing at their pages; with ``stem``, the
    page's style and a line linking back to the index (and naming the notebook that holds the code)."""
    html, _ = exporter.from_notebook_node(nb)
    html = re.sub(r'href="(?:\./)?(\d\d_[\w-]+)\.ipynb', r'href="\1.html', html)
    if stem is None:
        return html
    nav = (f'<nav class="report"><a href="index.html">&larr; the report\'s index</a> &middot; the code is hidden '
           f"here; <code>notebooks/{stem}.ipynb</code> has it</nav>")
    html = html.replace("</head>", f"<style>{PAGE_CSS}</style>\n</head>", 1)
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, html, count=1)


PAGES = {  # what each notebook's page shows, one line each on the index
    "01_cnn": "the original report's plain CNN and the controlled family's plain net: the data, training curves, "
              "where the errors are, against the original's accuracy",
    "02_resnet": "the original's ResNet18 (two bugs fixed) and the CIFAR ResNet18: curves, errors per class, "
                 "against the original",
    "03_densenet": "the original's DenseNet and DenseNet-BC 121: curves, errors per class, against the original",
    "04_senet": "the original's SE-ResNet18 and the controlled SE-ResNet18: curves, errors per class, against the "
                "original",
    "05_comparison": "the four architectures side by side: the original's rankings of accuracy, convergence speed "
                     "and training time, tested on its models and on the controlled family",
    "06_skip_connections": "degradation (He et al. Fig. 6), gradient flow at initialisation and in training, layer "
                           "responses: the verdicts on \"overfit\" and \"vanishing gradients\"",
    "07_why_skip_connections": "why shortcuts help: lesions, path lengths, loss landscapes, shattered gradients "
                               "and the depth sweep",
}
INDEX_FIGURE = "06_degradation.png"  # the one figure that shows what skip connections change
INDEX_CSS = """
body { font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 68rem; margin: 2rem auto;
       padding: 0 1.5rem; color: #1a1a1a; }
h1 { font-size: 1.7rem; line-height: 1.25; } h2 { font-size: 1.3rem; margin-top: 2.2rem; }
p.first { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.7rem 1rem; }
table { border-collapse: collapse; font-size: 0.92rem; margin: 0.5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.55rem; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #888; } tr.family th { background: #f2f2f2; font-weight: 600; }
td.num, td.nowrap { text-align: right; white-space: nowrap; } td.nowrap { text-align: left; }
.note { font-size: 0.88rem; color: #444; }
td.verdict { white-space: nowrap; font-weight: 600; } .confirmed { color: #176b1d; } .refuted { color: #a31515; }
.cannot-tell, .not-testable-in-this-regime { color: #6b5200; }
figure { margin: 1.5rem 0; } figure img { width: 100%; height: auto; } figcaption { font-size: 0.9rem; color: #444; }
code { font-size: 0.9em; background: #f4f4f4; padding: 0 0.2em; border-radius: 3px; }
ol li { margin: 0.35rem 0; }
"""
NUMERIC = {"original report (%)", "target (%)", "test accuracy (%)", "clean training accuracy (%)", "training images",
           "epochs", "s / epoch"}


def _inline(markdown: str) -> str:
    """The Markdown of one line (code spans, bold, italics) as HTML, the rest escaped."""
    text = html_lib.escape(markdown, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)


def _cell_class(column: str) -> str:
    return " class=num" if column in NUMERIC else " class=nowrap" if column in ("model", "device") else ""


def _results_table(rows: list[dict]) -> str:
    from .summary import FAMILY_NAMES

    if not rows:
        return "<p>No run is stored yet.</p>"
    cols = [c for c in rows[0] if c != "family"]
    head = "".join(f"<th>{html_lib.escape(c)}</th>" for c in cols)
    body, family = [], None
    for r in rows:
        if r["family"] != family:
            family = r["family"]
            body.append(f'<tr class="family"><th colspan="{len(cols)}">{FAMILY_NAMES.get(family, family)}</th></tr>')
        body.append("<tr>" + "".join(f"<td{_cell_class(c)}>{_inline(str(r[c]))}</td>" for c in cols) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _verdict_table(rows: list[dict], pages: dict[str, str]) -> str:
    def where(nb: str) -> str:
        stem = next((s for s in pages if s.startswith(nb)), None)
        return f'<a href="{stem}.html">{nb}</a>' if stem else nb

    def kind(verdict: str) -> str:  # the CSS class of a verdict: 'cannot tell (floor)' -> 'cannot-tell'
        return verdict.split(" (")[0].split(";")[0].replace(" ", "-")

    body = "".join(
        f"<tr><td>{_inline(r['claim'])}</td><td class=\"verdict {kind(r['verdict'])}\">{_inline(r['verdict'])}</td>"
        f"<td>{_inline(r['evidence'])}</td><td>{where(r['notebook'])}</td></tr>"
        for r in rows
    )
    return ("<table><thead><tr><th>claim</th><th>verdict</th><th>evidence</th><th>notebook</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")  # fmt: skip


def _figure(path: Path | None) -> str:
    """The figure inlined (base64), so that the index shows it wherever it is opened; '' if it is missing."""
    if path is None or not path.exists():
        return ""
    import base64

    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"


def index_html(pages: list[tuple[str, str]], runs: list[Run], figure: Path | None = None) -> str:
    """The report's index: what the stored runs say (where they come from, the results table and the verdicts,
    the same as the README's, from ``cnnlib.summary``), the figure of what skip connections change, then the
    notebooks' pages (``pages``: (file stem, title)) with one line each."""
    from . import summary, verdicts
    from .analysis import data_note

    titles = dict(pages)
    c = summary.claims(runs)
    if c is not None:
        deg = c.runs
        devices = ", ".join(dict.fromkeys(summary.device(r) for r in deg))
        verdict_part = (
            f"<p class=note>From the degradation family's runs of {data_note(deg)}, trained on {devices} (the "
            "richest profile in which the family is complete; the seeds of which all four nets exist). Each "
            f"notebook table's intervals are Holm-adjusted across its claims (family-wise error "
            f"{100 * verdicts.ALPHA:g}%); \"cannot tell\" says what the runs "
            "do not settle, and the notebooks say what would.</p>" + _verdict_table(summary.verdict_rows(c), titles)
            + f"<p class=note>{_inline(c.degradation.attrs.get('reading', ''))}</p>"
        )  # fmt: skip
    else:
        verdict_part, deg = ("<p>No verdicts yet: no profile holds a seed of which every net of the degradation "
                             "family exists.</p>", [])
    src = _figure(figure)
    fig = (f"<figure><img src='{src}' alt='training and test error of plain and residual nets of 20 and 56 layers'>"
           "<figcaption>Training (dashed) and test (solid) error of plain and residual nets of 20 and 56 layers "
           f"against epochs, mean over the seeds compared{f' ({data_note(deg)})' if deg else ''}, as notebook 06 "
           "draws it; the degradation rows above put intervals on what it shows.</figcaption></figure>"
           ) if src else ""  # fmt: skip
    items = "\n".join(f'<li><a href="{stem}.html">{html_lib.escape(title)}</a>'
                      + (f": {html_lib.escape(PAGES[stem])}" if stem in PAGES else "") + "</li>"
                      for stem, title in pages)  # fmt: skip
    origin = "".join(f"<li>{_inline(line.removeprefix('- '))}</li>" for line in provenance(runs).splitlines())
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>cnnlib report</title>"
        f"<style>{INDEX_CSS}</style></head><body>"
        "<h1>How do networks with and without skip connections differ in training?</h1>"
        "<p>A CIFAR-10 study of a plain CNN, ResNet, DenseNet and SE-ResNet, and of plain and residual nets that "
        "differ only in their shortcuts. The answer so far first; each notebook's page (linked below) shows how "
        "it was measured.</p>"
        f"<p class=first>{_inline(summary.read_first(runs))}</p>"
        "<h2>Results: the original report's accuracy and ours</h2>"
        + _results_table(summary.accuracy_rows(runs)) + f"<p class=note>{_inline(summary.ACCURACY_NOTE)}</p>"
        "<h2>Verdicts on the original report's claims</h2>" + verdict_part + fig
        + f"<h2>The notebooks</h2><ol>{items}</ol>"
        f"<h2>Where the numbers come from</h2><ul>{origin}</ul>"
        "</body></html>\n"
    )  # fmt: skip


def build_report(profile: str | None = None, out: str | Path = "report", *, in_place: bool = False,
                 notebooks: Path | None = None) -> Path:
    """Execute every notebook (of ``notebooks``, default the project's; training what is missing only where
    allowed) and export them as HTML with an index page into ``out``.

    The report is built in a temporary folder beside ``out`` and replaces ``out`` only when every page
    succeeded: a failing notebook (one line naming it, its cell and its error), a damaged run or Ctrl-C
    leave ``out`` as it was. The committed notebooks and figures are left as they are unless ``in_place``
    (``make refresh``): then, once every notebook succeeded, the executed notebooks replace them and the
    figures they drew replace the committed ones. The data are checked once before any notebook runs.
    """
    chosen = profile or os.environ.get("CNNLIB_PROFILE")
    if chosen and chosen not in PROFILES:  # before any data check or kernel start
        source = "" if profile else " (from CNNLIB_PROFILE)"
        raise ValueError(f"unknown profile {chosen!r}{source}; choose from {', '.join(sorted(PROFILES))}")

    import logging
    import tempfile
    import warnings

    from .data import load_cifar10

    warnings.filterwarnings("ignore", message=".*without encryption.*")
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    load_cifar10()  # DataError (one line, how to fix it) before any kernel starts
    from .results import list_runs

    list_runs()  # a damaged run (DamagedRunError: one line) stops the report before any notebook, not at the index
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}-building-", dir=out.parent))
    saved_env = {k: os.environ.get(k) for k in ("CNNLIB_PROFILE", "CNNLIB_FIGURES")}
    committed_figures = figures_root()
    try:
        if profile:
            os.environ["CNNLIB_PROFILE"] = profile
        os.environ["CNNLIB_FIGURES"] = str(building / "figures")  # the kernels' figures: with the new report
        try:
            with _Interrupts() as interrupts:
                executed = _build(building, notebooks or NOTEBOOKS, interrupts)
        except KeyboardInterrupt:
            kept = " and the committed notebooks and figures are" if in_place else " is"
            raise ReportInterrupted(f"{_shown(out)}{kept} left as before") from None
        if in_place:
            import nbformat

            for path, nb in executed:
                nbformat.write(nb, path)
            if (building / "figures").exists():
                shutil.copytree(building / "figures", committed_figures, dirs_exist_ok=True)
        _replace(out, building)
    finally:
        shutil.rmtree(building, ignore_errors=True)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    print(f"report written to {_shown(out / 'index.html')}")
    return out / "index.html"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _build(folder: Path, notebooks: Path, interrupts: _Interrupts) -> list[tuple[Path, object]]:
    """Every notebook executed and exported into ``folder``, then the index; returns (path, executed notebook)."""
    html_exporter = exporter()
    pages, executed = [], []
    start = time.perf_counter()
    for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        print(f"executing {path.name} ...", end="", flush=True)
        began = time.perf_counter()
        try:
            nb = _execute(path, interrupts=interrupts)
        except BaseException:
            print(flush=True)  # the error goes on a line of its own
            raise
        print(f" {time.perf_counter() - began:.0f} s", flush=True)
        executed.append((path, nb))
        (folder / f"{path.stem}.html").write_text(_html(nb, html_exporter, path.stem))
        title = next((c.source.splitlines()[0].lstrip("# ") for c in nb.cells if c.cell_type == "markdown"), path.stem)
        pages.append((path.stem, title))
    from .results import list_runs

    (folder / "index.html").write_text(index_html(pages, list_runs(), folder / "figures" / INDEX_FIGURE))
    print(f"{len(pages)} page(s) built in {time.perf_counter() - start:.0f} s")
    return executed


def _replace(out: Path, new: Path) -> None:
    """Put the folder ``new`` in the place of ``out`` (renames: the old report stays whole until then)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}-old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
