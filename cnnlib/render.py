"""The one place where a number becomes a string, and where written text meets the stored runs.

Verdict tables (``cnnlib.verdicts``) hold numbers; this module turns them into Markdown: numbers for prose
and tables (``pct``, ``points``, ``interval``, ...), tables (``table``, ``verdict_table``), and texts a person
wrote (``template``: ``cnnlib/templates/<name>.md``, Jinja2) with their numbers filled from verdict frames; the short
texts built from data the layers below return (``note``: figure notes, provenance lines, captions) are the macros of
``templates/notes.md``, and the report's index is ``templates/index.html`` (``html``).

A verdict frame has one row per claim, with these columns (``VERDICT_COLUMNS``)::

    id        a stable key, e.g. "degradation.plain"; templates and tests name a claim by it
    claim     the claim, as its author wrote it ("the deeper plain net fits its training data worse")
    a, b      the compared models ("" where a claim has one side)
    quantity  what is compared ("clean training error", "test accuracy", ...)
    estimate  a - b (or the one side's value), in ``unit``'s base: fractions for accuracies
    low, high its interval at ``level`` (NaN without one)
    level     the interval's confidence: 0.95, or its Holm-adjusted level
    n         networks per side (seeds), or images for a bootstrap over test images
    unit      "points" (fractions shown x100), "log10", "r" (a correlation), "ratio", "z" (Fisher's z), "loss"
              (cross-entropy, nats), "share" (a fraction shown as a percentage, unsigned)
    method    one of METHODS
    verdict   one of the verdict words of ``cnnlib.stats`` / ``cnnlib.verdicts``

A template opens with the verdicts it presumes, as TOML between two ``+++`` lines::

    +++
    [presumes]
    "degradation.diff" = "confirmed"
    +++
    Depth hurts the plain nets more than the residual ones: {{ v["degradation.diff"] | interval }} ...

When the stored runs change a presumed verdict, ``template`` still renders, under a warning that
names the claims that moved, and ``stale`` (which the tests call) lists them: a person rewrites
the text. A claim whose text a person wrote for more than one verdict (a verdict that moves as seeds land, with
a sentence for each: ``{% if v["targets.seed_densenet"].verdict == "confirmed" %}``) presumes them as a list,
``"targets.seed_densenet" = ["confirmed", "cannot tell"]``. No grammar is computed in Python: a plural is a
template's ({{ "s" if seeds|length > 1 else "" }}).
"""

from __future__ import annotations

import html as html_lib
import math
import re
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import jinja2
import numpy as np
import pandas as pd

TEMPLATES = Path(__file__).with_name("templates")

VERDICT_COLUMNS = ("id", "claim", "a", "b", "quantity", "estimate", "low", "high", "level", "n", "unit", "method",
                   "verdict")  # fmt: skip
_WORDS = tomllib.loads((TEMPLATES / "methods.toml").read_text())
METHODS = _WORDS["methods"]  # how an interval was made, in words, given its n


# --- numbers ------------------------------------------------------------------------------------------------------

def pct(x: float, digits: int = 1) -> str:
    """A fraction as a percentage: 0.8614 -> '86.1%'."""
    return "n/a" if not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def points(x: float, digits: int = 1) -> str:
    """A difference of fractions in percentage points, signed: 0.087 -> '+8.7 points'."""
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.{digits}f} points"


def signed(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.{digits}f}"


def num(x: float, digits: int = 2) -> str:
    """A plain number: 1.3933 -> '1.39'; num(12.0, 0) -> '12'."""
    return "n/a" if not math.isfinite(x) else f"{x:,.{digits}f}"


def mean_of(facts) -> str:
    """What a model's number in a text stands for (``pages.facts``): '' for one seed, ' (the mean of 3 seeds)'."""
    return "" if facts.seeds == 1 else f" (the mean of {facts.seeds} seeds)"


def paired_on(a, b) -> str:
    """Where a comparison of two models (``pages.facts`` of each) rests on one seed though one of them has several
    (``verdicts.compare`` pairs them on the first seed both have): ' (on seed 0, which both have)'; else ''."""
    both = sorted(set(a.seed_numbers) & set(b.seed_numbers))
    return f" (on seed {both[0]}, which both have)" if (a.seeds > 1) != (b.seeds > 1) and both else ""


_SCALE = {"points": (100.0, 1, " points"), "log10": (1.0, 2, ""), "r": (1.0, 3, ""), "ratio": (1.0, 2, "x"),
          "z": (1.0, 2, ""), "loss": (1.0, 3, ""), "share": (100.0, 1, "%")}
_UNSIGNED = {"share", "ratio"}  # a value or a ratio, not a difference: no sign


def interval(row, digits: int | None = None) -> str:
    """A verdict row's estimate and interval in its unit: '+8.7 [+3.1, +14.2] points', '+1.25 [+0.98, +1.52]'."""
    scale, d, suffix = _SCALE[_get(row, "unit")]
    d = d if digits is None else digits
    sign = "" if _get(row, "unit") in _UNSIGNED else "+"
    est, low, high = (scale * float(_get(row, k)) for k in ("estimate", "low", "high"))
    if not math.isfinite(est):
        return "n/a"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{est:{sign}.{d}f}{suffix} (no interval)"
    return f"{est:{sign}.{d}f} [{low:{sign}.{d}f}, {high:{sign}.{d}f}]{suffix}"


def level(row) -> str:
    lv = float(_get(row, "level"))
    return "" if not math.isfinite(lv) else f"{100 * lv:.4g}%"


def method(row) -> str:
    return METHODS[_get(row, "method")].format(n=int(_get(row, "n")))


def _get(row, key):
    return row[key] if isinstance(row, Mapping | pd.Series) else getattr(row, key)


# --- tables -------------------------------------------------------------------------------------------------------

def table(df: pd.DataFrame, index: bool = False) -> str:
    """A DataFrame as a Markdown table (cells' '|' escaped), for IPython.display.Markdown."""
    if index:
        df = df.reset_index()
    cells = [[str(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in cells)


SETTLE = _WORDS["settle"]  # what would settle a "cannot tell"


def settle(row) -> str:
    """What would settle a row's "cannot tell" ('' for a decided row)."""
    verdict, how = _get(row, "verdict"), _get(row, "method")
    if not str(verdict).startswith("cannot tell"):
        return ""
    if verdict == "cannot tell (floor)":
        return SETTLE["floor"]
    if verdict == "cannot tell (one network per architecture)" or how == "draws":
        return SETTLE["networks"]
    if how in ("fisher z", "t inits", "sign test"):
        return SETTLE["inits"]
    if how in ("untimed", "steps"):
        return SETTLE[how]
    return SETTLE["seeds"] if how == "none" else SETTLE["more"]


def verdict_table(frame: pd.DataFrame, compared: str = "comparison", measured: bool = False) -> str:
    """A verdict frame as a Markdown table: claim, difference with its interval, how it was made, verdict, and what
    would settle a "cannot tell"; with ``measured`` the quantity too (where it tells the rows apart: the probe
    point, the blocks deleted)."""
    shown = pd.DataFrame({
        compared: [f"{r.a} − {r.b}" if r.b else r.a for r in frame.itertuples()],
        "claim": frame["claim"],
        **({"measured": frame["quantity"]} if measured else {}),
        "difference [interval]": [interval(r) for r in frame.itertuples()],
        "level": [level(r) for r in frame.itertuples()],
        "interval from": [method(r) for r in frame.itertuples()],
        "verdict": frame["verdict"],
    })  # fmt: skip
    settled = [settle(r) for r in frame.itertuples()]
    if any(settled):
        shown["what would settle it"] = settled
    return table(shown)


def ranking_table(frame: pd.DataFrame) -> str:
    """A ranking verdict frame (``verdicts.rankings``) as a Markdown table, one line per compared pair: the claim and
    its verdict on its first line, each pair's difference, interval, level, method and verdict."""
    lines = []
    for r in frame.itertuples():
        pairs = r.pairs or [dict(a=r.a, b=r.b, estimate=r.estimate, low=r.low, high=r.high, level=r.level, n=r.n,
                                 unit=r.unit, method=r.method, verdict="")]  # fmt: skip
        for i, p in enumerate(pairs):
            p = {"unit": r.unit, **p}
            lines.append({"claim": r.claim if i == 0 else "", "verdict": f"**{r.verdict}**" if i == 0 else "",
                          "pair": f"{p['a']} {'/' if p['unit'] == 'ratio' else '−'} {p['b']}",
                          "difference [interval]": interval(p), "level": level(p),
                          "interval from": method(p), "pair's verdict": p["verdict"]})  # fmt: skip
    return table(pd.DataFrame(lines))


def mean_std(values, scale: float = 100, digits: int = 1, *, seeds: bool = False) -> str:
    """'m' for one value, 'm ± s' (sample std) for several, with '(n seeds)' appended if ``seeds``."""
    v = np.asarray(list(values), dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" + (f" ({len(v)} seeds)" if seeds else "")


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``analysis.summary_table`` for reading: each accuracy (%) as 'm ± s' over the seeds, "not recorded" where
    the runs did not record it, "n/a (CPU)" for the GPU memory of a run trained on a CPU."""
    out = frame.copy()
    for col in out.columns[out.columns.str.endswith("(%)")]:
        out[col] = [mean_std(v) if v is not None else "not recorded" for v in out[col]]
    if "peak GPU MB" in out:
        out["peak GPU MB"] = out["peak GPU MB"].astype(object).where(out["peak GPU MB"].notna(), "n/a (CPU)")
    return out


PENDING = "chosen; seed 0 trains again at it before it is recorded"  # a check's note while ``recipe.retraining``


def check_table(check, mark: str = "chosen") -> pd.DataFrame:
    """A recipe check (``pages.recipe_checks``) for reading, a row per setting: its peak lr and weight decay, each
    net's final held-out accuracy (%; "not trained yet", or "diverged" where its loss turned NaN), their mean, and a
    note: ``mark`` for the check's choice ("chosen" for a recorded one; for one that waits for its families' seed 0
    to train again at it, ``check.pending``, what it waits for), and which runs diverged under the setting."""
    df, chosen = check.table, (check.chosen or {}).get("setting")
    if chosen is None and (pending := getattr(check, "pending", None)):
        chosen, mark = pending["setting"], PENDING
    out = pd.DataFrame({"peak lr": df["lr"].to_numpy(), "weight decay": df["weight decay"].to_numpy()},
                       index=pd.Index(df["setting"], name="setting"))  # fmt: skip
    for net in check.nets:
        accs = zip(df[f"{net} held-out acc"], df["diverged runs"], strict=True)
        out[f"{net} held-out acc (%)"] = [f"{100 * v:.2f}" if math.isfinite(v) else "diverged" if net in d
                                          else "not trained yet" for v, d in accs]  # fmt: skip
    out["mean (%)"] = [f"{100 * v:.2f}" if math.isfinite(v) else "" for v in df["mean"]]
    out["note"] = ["; ".join(([mark] if tag == chosen else []) + ([f"diverged: {d}"] if d else []))
                   for tag, d in zip(df["setting"], df["diverged"], strict=True)]  # fmt: skip
    return out


# --- written text -------------------------------------------------------------------------------------------------

def _split(name: str) -> tuple[dict[str, str], str]:
    source = (TEMPLATES / f"{name}.md").read_text()
    if not source.startswith("+++\n"):
        return {}, source
    head, _, body = source[4:].partition("\n+++\n")
    return tomllib.loads(head).get("presumes", {}), body


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters.update(pct=pct, points=points, signed=signed, interval=interval, level=level, method=method, num=num,
                       inline=inline, esc=html_lib.escape, mean_of=mean_of,
                       paired_on=paired_on)  # fmt: skip
    return env


def inline(markdown) -> str:
    """The Markdown of one line (code spans, bold, italics) as HTML, the rest escaped."""
    text = html_lib.escape(str(markdown), quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)


def html(name: str, **context) -> str:
    """The HTML page ``templates/<name>.html``; the line breaks of its source are for reading only (dropped)."""
    source = (TEMPLATES / f"{name}.html").read_text().replace("\n", "")
    return _environment().from_string(source).render(**context) + "\n"


@cache
def _notes():
    return _environment().from_string((TEMPLATES / "notes.md").read_text()).module


def note(name: str, *args) -> str:
    """The short text ``name`` (a macro of ``templates/notes.md``) from data: a figure's note, a page's caption."""
    return str(getattr(_notes(), name)(*args))


def data_note(groups: list[dict]) -> str:
    """What a figure shows, for its title (``analysis.data_groups``): "profile 'cpu', 3,000 training / 1,000 test
    images, seeds 0, 1"."""
    return note("data_note", groups)


def provenance(groups: list[dict]) -> str:
    """A Markdown line per group of ``runs.provenance_groups``: the data, machine, engine and torch, and the runs."""
    return note("provenance", groups)


def family_titles(profiles: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Families' titles (``analysis.family_profiles``): their names, with their profiles where these differ."""
    if len(set(profiles.values())) <= 1:
        return {name: name for name in profiles}
    return {name: note("family_title", name, ps) for name, ps in profiles.items()}


def claims(*frames: pd.DataFrame) -> dict[str, SimpleNamespace]:
    """Verdict frames -> {id: row}, the form templates read (``v["degradation.diff"].verdict``)."""
    rows = [r for f in frames if len(f) for r in f.to_dict("records")]
    ids = [r["id"] for r in rows]
    if len(ids) != len(set(ids)):
        raise ValueError(f"claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return {r["id"]: SimpleNamespace(**r) for r in rows}


def presumes(name: str) -> dict[str, str | list[str]]:
    """The verdicts template ``name`` was written for: {claim id: verdict, or the verdicts its text branches on}."""
    return _split(name)[0]


def stale(name: str, v: Mapping[str, SimpleNamespace]) -> list[str]:
    """The presumed claims of template ``name`` whose verdict is none that its text was written for (or that ``v``
    lacks)."""
    out = []
    for cid, want in presumes(name).items():
        written = [want] if isinstance(want, str) else want
        got = getattr(v.get(cid), "verdict", "missing")
        if got not in written:
            out.append(f"{cid}: written for {' or '.join(repr(w) for w in written)}, the runs now say '{got}'")
    return out


def template(name: str, v: Mapping[str, SimpleNamespace] | None = None, **context) -> str:
    """Render ``templates/<name>.md`` with the claims ``v`` and ``context``. A template whose presumed verdicts moved
    renders under a warning that names them (and ``stale`` makes the tests fail) until a person rewrites it."""
    v = dict(v or {})
    _, body = _split(name)
    text = _environment().from_string(body).render(v=v, **context)
    moved = stale(name, v)
    if moved:
        warning = "; ".join(moved)
        text = (f"> **This text was written for other verdicts** ({warning}); it needs rewriting "
                f"(`cnnlib/templates/{name}.md`).\n\n{text}")  # fmt: skip
    return text

