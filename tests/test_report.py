"""The HTML report: pages that link to each other, show no code, and an index that opens with the answer."""

import re

import nbformat
import pandas as pd
import pytest
import torch
from nbconvert import HTMLExporter

from cnnlib import render, report, runs, summary
from cnnlib.config import make_config
from cnnlib.report import _html
from cnnlib.results import list_runs, save_run
from cnnlib.train import FitResult


def test_links_between_notebooks_point_at_their_pages():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "See [notebook 06](06_skip_connections.ipynb) and [07](./07_why_skip_connections.ipynb#1.-Lesion-study).")])
    html = _html(nb, HTMLExporter(), "05_comparison")
    assert 'href="06_skip_connections.html"' in html and 'href="07_why_skip_connections.html#1.-Lesion-study"' in html
    assert not re.search(r'href="[^"]*\.ipynb', html)


PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_the_pages_hide_the_code_and_keep_every_output_and_markdown_cell():
    exporter = report.exporter()
    assert exporter.exclude_input and exporter.exclude_input_prompt and exporter.exclude_output_prompt
    assert not exporter.exclude_output and not exporter.exclude_markdown
    code = nbformat.v4.new_code_cell("hidden_source_line = 41 + 1", execution_count=3, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="a printed line\n"),
        nbformat.v4.new_output("display_data", data={"image/png": PIXEL, "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"text/markdown": "a **Markdown** output"}),
    ])  # fmt: skip
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A title\n\nSome *prose*."), code])
    html = _html(nb, exporter, "01_cnn")
    body = html.split("<body", 1)[1]
    assert "hidden_source_line" not in html and "In&nbsp;[" not in body and "Out[" not in body
    assert "a printed line" in body and f"data:image/png;base64,{PIXEL}" in body
    assert "<strong>Markdown</strong>" in body and "<em>prose</em>" in body and "A title" in body
    assert 'href="index.html"' in body and "notebooks/01_cnn.ipynb" in body  # back to the index; where the code is
    assert re.search(r"body\.jp-Notebook \{ max-width: \d+rem", html)  # a column a laptop screen reads


def _store_run(model, profile, seed, clean, test, device="Test CPU (2 cores)", kind="cpu", seconds=2.0, **changes):
    cfg = make_config(model, profile, seed, **changes)
    epochs = cfg.epochs
    ramp = lambda end: [0.1 + (end - 0.1) * (e + 1) / epochs for e in range(epochs)]  # noqa: E731
    history = pd.DataFrame(dict(epoch=range(1, epochs + 1), train_loss=[2.0] * epochs, train_acc=ramp(clean),
                                clean_train_acc=ramp(clean), test_loss=[2.1] * epochs, test_acc=ramp(test),
                                seconds=[seconds] * epochs))  # fmt: skip
    info = dict(device=kind, device_name=device if kind == "cpu" else device, torch="2.x", train_s=seconds * epochs)
    save_run(cfg, FitResult(history, torch.zeros(10, dtype=torch.long), info, {}, {}))


@pytest.fixture
def small_store(store):
    """One full-profile run of seed_cnn; the degradation family in the pilot profile, three seeds each, where
    the deeper plain net fits its training data far worse and the residual nets do not."""
    _store_run("seed_cnn", "full", 0, 0.68, 0.66, seconds=3.0)
    _store_run("seed_cnn", "cpu", 0, 0.30, 0.26)
    accs = {"plain20": (0.80, 0.81, 0.79), "plain56": (0.60, 0.62, 0.61), "resnet20": (0.82, 0.83, 0.81),
            "resnet56": (0.85, 0.86, 0.84)}  # fmt: skip
    for model, values in accs.items():
        for seed, a in enumerate(values):
            _store_run(model, "cpu", seed, a, a - 0.05)
    return list_runs()


def test_the_index_opens_with_the_answer_the_verdicts_and_the_figure(small_store, tmp_path):
    runs = small_store
    figure = tmp_path / "06_degradation.png"
    figure.write_bytes(b"\x89PNG fake")
    pages = [("01_cnn", "A plain CNN"), ("06_skip_connections", "Skip connections")]
    html = report.index_html(pages, runs, figure)
    body = html.split("<body>", 1)[1]

    # the first screen: the question, the written answer, the verdicts, the figure, in this order
    tags = re.findall(r"<(h1|h2|div class=answer|table class=verdicts|table|figure)\b", body)
    assert tags[:5] == ["h1", "div class=answer", "table class=verdicts", "figure", "h2"]
    answer = body[body.index("<div class=answer>"):body.index("<table class=verdicts>")]
    m = summary._models(runs)
    assert m["plain56"].profile == "cpu" and m["plain56"].seeds == 3  # the richest profile with the family complete
    for model in ("plain20", "plain56", "resnet20", "resnet56"):
        assert f"{100 * m[model].clean:.1f}%" in answer
    # the verdicts, from the frame the README's verdict table shows
    frame = summary.verdict_frame(runs)
    assert frame.attrs["profile"] == "cpu"
    assert list(frame["id"]) == ["overfitting.plain", "degradation.plain", "degradation.residual", "degradation.diff"]
    assert frame.set_index("id").loc["degradation.plain", "verdict"] == "confirmed"
    assert frame.set_index("id").loc["degradation.plain", "estimate"] == pytest.approx(0.19)
    moved = render.stale("index_answer", render.claims(frame))
    # the pilot-sized nets of this store fit too little for the text's presumptions: the index says so, in sight
    assert moved and {x.split(":")[0] for x in moved} <= set(render.presumes("index_answer"))
    assert "written for other verdicts" in answer
    verdicts_part = body[body.index("<table class=verdicts>"):body.index("<figure>")]
    assert verdicts_part.count("<td class=\"verdict ") == len(frame) == 4  # overfitting + degradation's three
    assert '<td class="verdict confirmed">confirmed</td>' in verdicts_part
    assert '<a href="06_skip_connections.html">06</a>' in verdicts_part
    assert "data:image/png;base64," in body[body.index("<figure>"):body.index("</figure>")]
    block = summary.readme_block(runs)
    assert block.count("| confirmed |") == frame["verdict"].eq("confirmed").sum()  # the README shows the same
    assert block.index(summary.answer(runs).strip()) < block.index("| model |")  # the README opens the same way

    # the results table, narrow enough for the page: seven columns, one row per model (its richest profile, or
    # its pilot where it has no full run), family by family; the devices named under it
    results = body[body.index("<h2>Results"):body.index("<h2>The notebooks")]
    assert results.count("<th>") == len(report.INDEX_COLUMNS) == 7 and "<th>device</th>" not in results
    assert results.count("<tr><td class=nowrap><code>") == 5  # seed_cnn (full) and the four pilots
    assert "<td class=num>60</td>" in results and "<td class=num>66.0</td>" in results  # the original's, ours
    assert "75.0 ± 1.0 (3 seeds)" in results and "<td class=num>3.0</td>" in results  # spread; s / epoch
    assert "(pilot, <code>cpu</code>)" in results and "Trained on: Test CPU (2 cores)." in results
    assert results.index("the original report's models") < results.index("the degradation family")
    assert "table-layout" not in html and "min-width" not in html  # nothing forces the page wider than the screen

    # then the pages, one line each
    notebooks = body[body.index("<h2>The notebooks"):]
    assert notebooks.count("<li><a href=") == 2 and report.PAGES["06_skip_connections"].split(":")[0] in notebooks


def test_a_family_seed_is_compared_only_when_all_its_members_exist(store, capsys):
    deg = ["plain20", "plain56", "resnet20", "resnet56"]
    for model in deg:
        _store_run(model, "cpu", 0, 0.8, 0.75)
    _store_run("plain20", "cpu", 1, 0.81, 0.76)
    _store_run("plain56", "cpu", 1, 0.62, 0.6)
    _store_run("plain20", "cpu", 2, 0.79, 0.74)

    # seeds 1 and 2 are half-done: held back and named, never compared
    assert runs.get_runs(deg, "cpu", (1, 2), required=False) == []
    said = capsys.readouterr().out
    assert "seed 1 held back" in said and "not stored yet in profile 'cpu': resnet20, resnet56\n" in said
    assert "seed 2 held back" in said and ": plain56, resnet20, resnet56\n" in said
    frame = summary.verdict_frame(list_runs())
    assert frame.set_index("id").loc["degradation.plain", "n"] == 1  # seed 0 only
    assert frame.set_index("id").loc["degradation.plain", "method"] == "none"  # one seed: no interval

    # once the seed is complete it counts, in the notebooks' runs and in the README's verdicts
    _store_run("resnet20", "cpu", 1, 0.83, 0.78)
    _store_run("resnet56", "cpu", 1, 0.85, 0.8)
    assert [r.config.run_id for r in runs.get_runs(deg, "cpu", (1, 2), required=False)] == [
        f"{m}-cpu-s1" for m in deg]
    assert "seed 1" not in capsys.readouterr().out
    assert summary.verdict_frame(list_runs()).set_index("id").loc["degradation.plain", "n"] == 2


def test_rendering_never_trains_it_names_the_command_that_does(store, monkeypatch, capsys):
    from cnnlib import results, train

    def no_training(*a, **k):
        pytest.fail("a notebook's run lookup started training")

    monkeypatch.setattr(results, "fit_or_load", no_training)
    monkeypatch.setattr(train, "fit", no_training)
    with pytest.raises(runs.MissingRuns, match="missing: 2"):
        runs.get_runs(["resnet20", "plain20"], "smoke")
    said = capsys.readouterr().out.splitlines()
    assert said[0].endswith("`python -m cnnlib train resnet20 --profile smoke --seed 0`")
    assert said[1].endswith("`python -m cnnlib train plain20 --profile smoke --seed 0`")
    _store_run("resnet20", "smoke", 0, 0.3, 0.25, epochs=1)  # another config (an older recipe): not today's run
    assert runs.get_run("resnet20", "smoke") is None
    assert capsys.readouterr().out.strip().endswith("--profile smoke --seed 0 --retrain`")
    _store_run("plain20", "smoke", 0, 0.3, 0.25)
    assert runs.get_run("plain20", "smoke").config.run_id == "plain20-smoke-s0"


def _notebooks(folder, *sources):
    """Notebooks 01, 02, ... in ``folder``, one code cell each."""
    folder.mkdir()
    for i, source in enumerate(sources, start=1):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# Page {i}"),
                                             nbformat.v4.new_code_cell(source)])  # fmt: skip
        nbformat.write(nb, folder / f"{i:02d}_page.ipynb")
    return folder


@pytest.fixture
def old_report(store, monkeypatch):
    """A report folder from an earlier build, and no data check (these notebooks need no data)."""
    from cnnlib import data

    monkeypatch.setattr(data, "load_cifar10", lambda: None)
    out = store / "report"
    out.mkdir()
    (out / "index.html").write_text("the earlier report")
    return out


def test_a_failing_notebook_leaves_the_report_and_the_committed_notebooks_as_they_were(old_report, tmp_path,
                                                                                       monkeypatch):  # fmt: skip
    from cnnlib.report import NotebookFailed, build_report

    folder = _notebooks(tmp_path / "nbs", "print('one')", "raise ValueError('two')")
    committed = {p: p.read_bytes() for p in folder.iterdir()}
    calls = []

    def execute(path, interrupts=None):  # the first page succeeds, the second fails
        calls.append(path.name)
        if path.name.startswith("02"):
            raise NotebookFailed(f"{path.name}, cell 1: ValueError: two")
        return nbformat.read(path, as_version=4)

    monkeypatch.setattr(report, "_execute", execute)
    monkeypatch.setenv("CNNLIB_FIGURES", str(tmp_path / "figures"))
    with pytest.raises(NotebookFailed, match="02_page.ipynb, cell 1"):
        build_report(out=old_report, notebooks=folder, in_place=True)
    assert calls == ["01_page.ipynb", "02_page.ipynb"]
    assert [p.name for p in old_report.iterdir()] == ["index.html"]
    assert (old_report / "index.html").read_text() == "the earlier report"
    assert {p: p.read_bytes() for p in folder.iterdir()} == committed
    assert [p.name for p in old_report.parent.iterdir() if p.name.startswith(".")] == []  # nothing left behind


def test_a_report_replaces_the_earlier_one_whole(old_report, tmp_path, monkeypatch):
    from cnnlib.report import build_report

    folder = _notebooks(tmp_path / "nbs", "print('one')")
    monkeypatch.setattr(report, "_execute", lambda path, interrupts=None: nbformat.read(path, as_version=4))
    index = build_report(out=old_report, notebooks=folder)
    assert sorted(p.name for p in old_report.iterdir()) == ["01_page.html", "index.html"]
    assert index == old_report / "index.html" and "the earlier report" not in index.read_text()
    assert [p.name for p in old_report.parent.iterdir() if p.name.startswith(".")] == []


# the kernel (a process of its own session, as Jupyter starts it) sends its client the Ctrl-C a terminal would
INTERRUPTED_REPORT = """
import sys
from pathlib import Path
from cnnlib import data, report, results
data.load_cifar10 = lambda: None
results.list_runs = lambda: []
report.NOTEBOOKS = Path(sys.argv[1])
from cnnlib.__main__ import main
sys.exit(main(["report", "--out", sys.argv[2]]))
"""


def test_ctrl_c_during_the_report_ends_in_one_line_and_leaves_the_report_as_it_was(old_report, tmp_path):
    import os
    import subprocess
    import sys

    folder = _notebooks(tmp_path / "nbs", "print('one')", "import os, signal, time\n"
                        "os.kill(os.getppid(), signal.SIGINT)\ntime.sleep(120)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_REPORT, str(folder), str(old_report)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))  # fmt: skip
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert proc.stderr == f"interrupted; {old_report} is left as before\n"
    assert proc.stdout.splitlines()[-1] == "executing 02_page.ipynb ...", proc.stdout  # and nothing after it
    assert [p.name for p in old_report.iterdir()] == ["index.html"]
    assert (old_report / "index.html").read_text() == "the earlier report"
    assert [p.name for p in old_report.parent.iterdir() if p.name.startswith(".")] == []


def test_the_kernels_own_stderr_stays_off_the_terminal_and_names_why_a_kernel_died(tmp_path, capfd):
    from cnnlib.report import NotebookFailed, _execute

    folder = _notebooks(tmp_path / "nbs", "import os\nos.write(2, b'libzmq noise\\n')\nprint('one')",
                        "import os\nos.write(2, b'the last words\\n')\nos._exit(3)")  # fmt: skip
    nb = _execute(folder / "01_page.ipynb")  # the noise of a kernel torn down after Ctrl-C, say
    assert nb.cells[1].outputs[0]["text"] == "one\n"
    assert "libzmq noise" not in capfd.readouterr().err
    with pytest.raises(NotebookFailed, match=r"^02_page.ipynb: the kernel died \(the last words\)$"):
        _execute(folder / "02_page.ipynb", timeout=60)
    assert "the last words" not in capfd.readouterr().err


def test_a_damaged_run_stops_the_report_before_any_notebook_runs(old_report, tmp_path, monkeypatch):
    from cnnlib.report import build_report
    from cnnlib.results import DamagedRunError

    _store_run("seed_cnn", "cpu", 0, 0.30, 0.26)
    history = old_report.parent / "results" / "seed_cnn-cpu-s0" / "history.csv"
    history.write_bytes(history.read_bytes()[:40])
    monkeypatch.setattr(report, "_execute", lambda *a, **k: pytest.fail("a notebook ran on a damaged store"))
    with pytest.raises(DamagedRunError, match="seed_cnn-cpu-s0/history.csv has 40 bytes"):
        build_report(out=old_report, notebooks=_notebooks(tmp_path / "nbs", "print('one')"))
    assert (old_report / "index.html").read_text() == "the earlier report"


PROBE = ("<script>window.addEventListener('load', () => { const r = s => document.querySelector(s)"
         ".getBoundingClientRect(); document.body.dataset.probe = JSON.stringify({scroll: document.documentElement"
         ".scrollWidth, width: document.documentElement.clientWidth, verdicts: r('table.verdicts').top, "
         "figure: r('figure img').bottom}); });</script></body>")  # fmt: skip


def _browser() -> str | None:
    import shutil

    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium here (apt-get install chromium)")
def test_the_index_first_screen_in_a_browser(tmp_path):
    """On the committed runs, at 1280x800 in headless Chromium: the answer, the verdicts and the figure all show on
    the first screen, and nothing is wider than the page."""
    import json
    import subprocess
    from html import unescape
    from pathlib import Path

    figure = Path(__file__).resolve().parent.parent / "figures" / report.INDEX_FIGURE
    page = tmp_path / "index.html"
    page.write_text(report.index_html([("06_skip_connections", "Skip connections")], list_runs(), figure)
                    .replace("</body>", PROBE))  # fmt: skip
    dom = subprocess.run([_browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout  # fmt: skip
    probe = json.loads(unescape(re.search(r'data-probe="([^"]*)"', dom).group(1)))
    assert probe["scroll"] <= probe["width"], probe  # no horizontal scrolling at 1280 px
    assert probe["verdicts"] < probe["figure"] <= 800, probe  # the figure's bottom edge on the first screen
