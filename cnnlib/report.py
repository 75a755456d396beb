"""``make report``: every notebook executed from the stored runs, exported as HTML, and an index page.

Rendering never trains: the notebooks read stored runs (``cnnlib.runs``), and a missing run stops
its notebook with the command that trains it. The index opens as the README does: the answer
(``templates/index_answer.md``), the verdicts, the figure, then the results table.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import tomllib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from . import render
from .constants import ALPHA
from .paths import figures_root, shown
from .runs import provenance_groups

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
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    client = _client_class()(nb, timeout=timeout, kernel_name="python3", resources=resources,
                             extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no transport warnings
    if interrupts is not None:
        interrupts.client = client
    # The kernel's own stderr (the cells' output comes by messages) goes to a file, not to the terminal: a kernel torn
    # down after Ctrl-C can print libzmq's assertions there, and a kernel that died leaves its last words in it.
    with tempfile.TemporaryFile() as kernel_stderr:
        try:
            client.execute(stderr=kernel_stderr)
        except (CellExecutionError, DeadKernelError) as e:
            if interrupts is not None and interrupts.asked:
                raise KeyboardInterrupt from None
            if isinstance(e, DeadKernelError):
                kernel_stderr.seek(0)
                last = kernel_stderr.read().decode(errors="replace").strip().splitlines()
                raise NotebookFailed(f"{path.name}: the kernel died ({last[-1] if last else e})") from None
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
    css = (render.TEMPLATES / "page.css").read_text()  # the code hidden, no prompts, a column a laptop reads easily
    html = html.replace("</head>", f"<style>{css}</style>\n</head>", 1)
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, html, count=1)


PAGES = tomllib.loads((render.TEMPLATES / "pages.toml").read_text())  # each notebook's line on the index
INDEX_FIGURE = "06_degradation.png"  # the one figure that shows what skip connections change
INDEX_COLUMNS = ("model", "original report (%)", "target (%)", "test accuracy (%)", "clean training accuracy (%)",
                 "epochs", "s / epoch")  # the results table's columns on the index (profile and device: named apart)


def index_html(pages: list[tuple[str, str]], runs: list[Run], figure: Path | None = None) -> str:
    """The report's index (``templates/index.html``), opening as the README does: the question, the written answer
    (``templates/index_answer.md``), the verdicts (the README's, from ``cnnlib.summary``), the figure of what skip
    connections change; then the results table, the notebooks' pages (``pages``: (file stem, title)) with one line
    each, and where the numbers come from."""
    from . import summary
    from .analysis import data_groups

    v = summary.verdict_frame(runs)
    deg = summary._family_runs(runs, list(summary._families()["degradation"]))[1] if len(v) else []
    main, pilots = summary.main_and_pilot_rows(summary.accuracy_rows(runs))
    rows = main + [{**r, "pilot": True} for r in pilots]
    paragraphs = summary.answer(runs, "index_answer").split("\n\n")
    shown_figure = figure is not None and figure.exists()  # inlined (base64): the index shows it wherever it is opened
    return render.html(
        "index", css=(render.TEMPLATES / "index.css").read_text(), stems=[stem for stem, _ in pages], pages=pages,
        answer=[" ".join(par.split()) for par in paragraphs if par.strip()], alpha=ALPHA, descriptions=PAGES,
        verdicts=list(v.itertuples()) if len(v) else None, deg_note=render.data_note(data_groups(deg)),
        deg_devices=", ".join(dict.fromkeys(summary.device(r) for r in deg)),
        figure=base64.b64encode(figure.read_bytes()).decode() if shown_figure else "",
        results=rows, columns=INDEX_COLUMNS, families=summary.FAMILY_NAMES, accuracy_note=summary.ACCURACY_NOTE,
        devices=", ".join(dict.fromkeys(d for r in rows for d in r["device"].split(", "))),
        provenance=render.provenance(provenance_groups(runs)))


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
