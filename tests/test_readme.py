"""The README's numbers are computed from the stored runs, and stay in step with them; its commands run."""

import re

import pytest

from cnnlib import summary
from cnnlib.results import list_runs


def test_the_readme_results_block_matches_the_stored_runs():
    text = summary.README.read_text()
    head, rest = text.split(summary.START, 1)
    block, tail = rest.split(summary.END, 1)
    assert summary.START + block + summary.END == summary.readme_block(), (
        "README.md's results section is out of date: run `python -m cnnlib readme` (or make refresh)")
    # what the reader sees first: the answer (at most 150 words), the full profile's table, one figure
    answer, table = block.strip().split("\n\n", 2)[:2]
    assert answer == summary.answer(list_runs()).strip() and len(answer.split()) <= 150
    assert table.startswith("| model |") and "| cpu |" not in table  # the pilots stand apart
    assert block.index(summary.FIGURE) < block.index("pilots of the reduced one")
    assert "Read this first" not in text


def test_the_written_answers_hold_on_the_stored_runs():
    """Each template's presumed verdicts are the stored runs' verdicts, and its numbers are theirs."""
    from cnnlib import render

    runs = list_runs()
    frame = summary.verdict_frame(runs)
    v = render.claims(frame, summary.low_rate(runs, frame.attrs["profile"]))
    m = summary._models(runs)
    for name in ("readme_answer", "index_answer"):
        assert render.presumes(name) and render.stale(name, v) == [], name
        text = summary.answer(runs, name)
        for model in ("plain20", "plain56", "resnet20", "resnet56"):
            assert render.pct(m[model].clean) in text
    deg = [r for r in runs if r.config.model == "plain56" and r.config.profile == "full" and not r.config.tag]
    assert m["plain56"].seeds == len(deg) == 3
    assert abs(m["plain56"].clean - sum(r.history["clean_train_acc"].iloc[-1] for r in deg) / 3) < 1e-12


def readme_commands() -> list[list[str]]:
    """The arguments of every ``python -m cnnlib`` line in the README's code blocks, in order (a background
    job's ``nice -n 10``, redirection and ``&`` left out; comments dropped). The results section, generated,
    only names commands in its prose."""
    import shlex

    text, commands = summary.README.read_text(), []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["nice", "-n"]:
                words = words[3:]
            words = [w for w in words if w not in ("&", ">", "2>&1") and not w.endswith(".log")]
            if words[:3] == ["python", "-m", "cnnlib"]:
                commands.append(words[3:])
    return commands


def test_the_readme_says_up_front_how_to_enter_the_environment():
    text = summary.README.read_text()
    first_command = text.index("\npython -m cnnlib")
    assert "source .venv/bin/activate" in text[:first_command] and ".venv/bin/cnnlib" in text[:first_command]


def _data_present() -> bool:
    from test_device_path import _data_tarball

    return _data_tarball() is not None


@pytest.mark.skipif(not _data_present(), reason="needs the CIFAR-10 tarball (CNNLIB_DATA or data/)")
def test_every_command_of_the_readme_runs_on_a_fresh_clone(tmp_path, monkeypatch, capsys, _committed_results):
    """Each example as the README writes it, on a copy of the committed runs with no weights or checkpoints (as a
    fresh clone has them), in the README's order; train-missing gets a budget of one second instead of hours."""
    import shutil

    from cnnlib.__main__ import main

    monkeypatch.setenv("CNNLIB_RESULTS", str(shutil.copytree(_committed_results, tmp_path / "results")))
    commands = readme_commands()
    assert ["tables", "resnet20-smoke-s0"] in commands and len(commands) >= 10
    for argv in commands:
        if argv[0] == "train-missing":
            argv = [w if prev != "--budget" else "1" for prev, w in zip(["", *argv], argv, strict=False)]
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0 and "Traceback" not in err, (argv, out[-2000:], err[-2000:])
    # the Python example
    snippet = re.search(r"```python\n(.*?)```", summary.README.read_text(), flags=re.S).group(1)
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 -- the README's own example
    assert scope["run"].config.run_id == "resnet20-full-s0" and len(scope["run"].history) == 40


def test_the_console_script_of_the_environment_runs():
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "cnnlib"
    if not script.exists():
        pytest.skip("the environment has no cnnlib console script (not installed with pip install -e)")
    proc = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0 and proc.stdout.startswith("seed "), proc.stderr
