"""``make report``: every notebook executed from the stored runs, exported as HTML, and an index page.

Rendering never trains: the notebooks read stored runs (``cnnlib.runs``), and a missing run stops
its notebook with the command that trains it. The index opens as the README does: the answer
(``templates/index_answer.md``), the verdicts, the figure, then the results table.
"""

from __future__ import annotations

import base64
import contextlib
import html as html_lib
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .constants import ALPHA
from .paths import figures_root, shown
from .runs import provenance

if TYPE_CHECKING:
    from .results import Run

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


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
        self._before = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._before.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        provisioner = getattr(getattr(self.client, "km", None), "provisioner", None)
        pgid = getattr(provisioner, "pgid", None)
        if pgid:  # the kernel runs in a session of its own: Ctrl-C in the terminal does not reach it
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGINT)


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


def _html(nb, exporter, stem: str) -> str:
    """The notebook ``stem`` as HTML, with links to sibling notebooks pointing at their pages, the page's style and
    a line linking back to the index (and naming the notebook that holds the code)."""
    html, _ = exporter.from_notebook_node(nb)
    html = re.sub(r'href="(?:\./)?(\d\d_[\w-]+)\.ipynb', r'href="\1.html', html)
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
# The first screen (1280x800) holds the question, the answer, the verdicts and the figure; no table is wider
# than the page (the results table has seven columns and wraps; the devices are named under it).
INDEX_CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 68rem; margin: 0.8rem auto;
       padding: 0 1.5rem; color: #1a1a1a; }
h1 { font-size: 1.45rem; line-height: 1.25; margin: 0.3rem 0; } h2 { font-size: 1.3rem; margin-top: 2.2rem; }
p { margin: 0.4rem 0; }
table { border-collapse: collapse; font-size: 0.88rem; margin: 0.4rem 0; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
table.verdicts { font-size: 0.8rem; line-height: 1.3; } table.verdicts td { padding: 0.1rem 0.5rem; }
thead th { border-bottom: 2px solid #888; } tr.family th { background: #f2f2f2; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; } td.nowrap { white-space: nowrap; }
.note { font-size: 0.86rem; color: #444; }
td.verdict { white-space: nowrap; font-weight: 600; } .confirmed { color: #176b1d; } .refuted { color: #a31515; }
.cannot-tell, .not-testable-in-this-regime { color: #6b5200; }
figure { margin: 0.3rem 0; text-align: center; } figure img { max-width: 100%; max-height: 14rem; height: auto; }
figcaption { font-size: 0.86rem; color: #444; text-align: left; }
code { font-size: 0.9em; background: #f4f4f4; padding: 0 0.2em; border-radius: 3px; }
ol li { margin: 0.35rem 0; }
"""
INDEX_COLUMNS = ("model", "original report (%)", "target (%)", "test accuracy (%)", "clean training accuracy (%)",
                 "epochs", "s / epoch")  # the results table's columns on the index (profile and device: named apart)


def _inline(markdown: str) -> str:
    """The Markdown of one line (code spans, bold, italics) as HTML, the rest escaped."""
    text = html_lib.escape(markdown, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)


def _results_table(rows: list[dict]) -> str:
    from .summary import FAMILY_NAMES

    if not rows:
        return "<p>No run is stored yet.</p>"
    head = "".join(f"<th>{html_lib.escape(c)}</th>" for c in INDEX_COLUMNS)
    body, family = [], None
    for r in rows:
        if r["family"] != family:
            family = r["family"]
            body.append(f'<tr class="family"><th colspan="{len(INDEX_COLUMNS)}">'
                        f"{FAMILY_NAMES.get(family, family)}</th></tr>")  # fmt: skip
        cells = (f"<td class={'nowrap' if c == 'model' else 'num'}>{_inline(str(r[c]))}</td>" for c in INDEX_COLUMNS)
        body.append(f"<tr>{''.join(cells)}</tr>")  # the model's name, then numbers
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
    return ("<table class=verdicts><thead><tr><th>claim</th><th>verdict</th><th>evidence</th><th>notebook</th></tr>"
            f"</thead><tbody>{body}</tbody></table>")  # fmt: skip


def index_html(pages: list[tuple[str, str]], runs: list[Run], figure: Path | None = None) -> str:
    """The report's index, opening as the README does: the question, the written answer (``templates/index_answer.md``),
    the verdicts (the README's, from ``cnnlib.summary``), the figure of what skip connections change; then the results
    table, the notebooks' pages (``pages``: (file stem, title)) with one line each, and where the numbers come from."""
    from . import render, summary
    from .analysis import data_note

    answer = "".join(f"<p>{_inline(' '.join(par.split()))}</p>"
                     for par in summary.answer(runs, "index_answer").split("\n\n") if par.strip())  # fmt: skip
    v = summary.verdict_frame(runs)
    if len(v):
        deg = summary._family_runs(runs, list(summary._families()["degradation"]))[1]
        devices = ", ".join(dict.fromkeys(summary.device(r) for r in deg))
        rows = [{"claim": f"{r.claim} ({r.a} − {r.b})" if r.b else f"{r.claim} ({r.a}, {r.quantity})",
                 "verdict": r.verdict, "evidence": f"{render.interval(r)} ({render.method(r)})",
                 "notebook": r.notebook} for r in v.itertuples()]  # fmt: skip
        verdict_part = _verdict_table(rows, dict(pages))
        verdict_note = (f"<p class=note>From the degradation family's runs of {data_note(deg)}, trained on {devices} "
                        "(the richest profile in which the family is complete; the seeds of which all four nets "
                        "exist). Each notebook table's intervals are Holm-adjusted across its claims (family-wise "
                        f"error {100 * ALPHA:g}%); \"cannot tell\" says what the runs do not settle, and the notebooks "
                        "say what would.</p>")  # fmt: skip
    else:
        verdict_part, verdict_note, deg = ("<p>No verdicts yet: no profile holds a seed of which every net of the "
                                           "degradation family exists.</p>", "", [])  # fmt: skip
    fig = ""
    if figure is not None and figure.exists():  # inlined (base64): the index shows it wherever it is opened
        fig = (f"<figure><img src='data:image/png;base64,{base64.b64encode(figure.read_bytes()).decode()}' "
               "alt='training and test error of plain and residual nets of 20 and 56 layers'><figcaption>Training "
               "(dashed) and test (solid) error of plain and residual nets of 20 and 56 layers against epochs, mean "
               f"over the seeds compared{f' ({data_note(deg)})' if deg else ''}, as notebook 06 draws it; the "
               "degradation rows above put intervals on what it shows.</figcaption></figure>")  # fmt: skip
    main, pilots = summary.main_and_pilot_rows(summary.accuracy_rows(runs))
    rows = main + [{**r, "model": f"{r['model']} (pilot, `{r['profile']}`)"} for r in pilots]
    devices = ", ".join(dict.fromkeys(d for r in rows for d in r["device"].split(", ")))
    items = "\n".join(f'<li><a href="{stem}.html">{html_lib.escape(title)}</a>'
                      + (f": {html_lib.escape(PAGES[stem])}" if stem in PAGES else "") + "</li>"
                      for stem, title in pages)  # fmt: skip
    origin = "".join(f"<li>{_inline(line.removeprefix('- '))}</li>" for line in provenance(runs).splitlines())
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>cnnlib report</title>"
        f"<style>{INDEX_CSS}</style></head><body>"
        "<h1>How do networks with and without skip connections differ in training?</h1>"
        f"<div class=answer>{answer}</div>" + verdict_part + fig + verdict_note
        + "<h2>Results: the original report's accuracy and ours</h2>" + _results_table(rows)
        + f"<p class=note>{_inline(summary.ACCURACY_NOTE)} The `full` profile's runs, and a pilot of the reduced "
        f"profile where a model has no full run yet. Trained on: {html_lib.escape(devices)}.</p>"
        + f"<h2>The notebooks</h2><ol>{items}</ol>"
        f"<h2>Where the numbers come from</h2><ul>{origin}</ul>"
        "</body></html>\n"
    )  # fmt: skip


def build_report(profile: str | None = None, out: str | Path = "report", *, in_place: bool = False,
                 notebooks: Path | None = None) -> Path:
    """Execute every notebook (of ``notebooks``, default the project's) from the stored runs and export
    them as HTML with an index page into ``out``.

    The report is built in a temporary folder beside ``out`` and replaces ``out`` only when every page
    succeeded: a failing notebook (one line naming it, its cell and its error), a damaged run or Ctrl-C
    leave ``out`` as it was. The committed notebooks and figures are left as they are unless ``in_place``
    (``make refresh``): then, once every notebook succeeded, the executed notebooks replace them and the
    figures they drew replace the committed ones. The data are checked once before any notebook runs.
    """
    from .config import PROFILES

    chosen = profile or os.environ.get("CNNLIB_PROFILE")
    if chosen and chosen not in PROFILES:  # before any data check or kernel start
        source = "" if profile else " (from CNNLIB_PROFILE)"
        raise ValueError(f"unknown profile {chosen!r}{source}; choose from {', '.join(sorted(PROFILES))}")

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
            raise ReportInterrupted(f"{shown(out)}{kept} left as before") from None
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
    print(f"report written to {shown(out / 'index.html')}")
    return out / "index.html"


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
