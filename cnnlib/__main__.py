"""Command line: ``python -m cnnlib COMMAND``, one of list, summary, train, status, train-missing, engine, tables,
verify, readme and report (``python -m cnnlib --help`` lists them).

User errors (unknown model, profile or run, bad numbers, missing data, a damaged file of a stored run or missing
weights) print a short message (one line, two for missing data) and exit with status 2; they never show a traceback.
Ctrl-C and SIGTERM end a command with one line and status 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import SimpleNamespace

from .data import DataError
from .paths import shown


def _number(cast: type, minimum: int):
    """An argparse type: a whole number (``int``) of at least ``minimum``, or a number (``float``) above 0."""
    what = "a whole number" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (cast is float and not value > 0) or (cast is int and value < minimum):
            raise argparse.ArgumentTypeError(f"must be positive, got {value}" if cast is float or minimum == 1
                                             else f"must be {minimum} or more, got {value}")  # fmt: skip
        return value

    return parse


_positive_int, _seed, _positive_float = _number(int, 1), _number(int, 0), _number(float, 0)


def _device(text: str) -> str:
    """cpu, cuda or cuda:N, and only a device this machine has."""
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but this machine has no CUDA GPU; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, no usage dump: the message names what was wrong and where the help is."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class _Help(argparse.HelpFormatter):
    """Commands listed one a line with their help, without argparse's COMMAND header line above them."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=28)

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(a) for a in action._get_subactions())
        return super()._format_action(action)


DESCRIPTION = "Train and study CNNs on CIFAR-10: plain nets, ResNet, DenseNet and SE-ResNet."
EPILOG = ("Options of a command: python -m cnnlib COMMAND --help. User errors print a short message "
          "and exit with status 2.")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from .config import PROFILES

    p = _Parser(prog="python -m cnnlib", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Help)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, title="commands",
                           metavar="COMMAND")  # fmt: skip
    sub.add_parser("list", help="list the registered models by family")
    s = sub.add_parser("summary", help="torchinfo table of a model")
    s.add_argument("model")
    t = sub.add_parser("train", help="train a run of each model given (or load it if stored) and store it")
    t.add_argument("model", nargs="+")
    t.add_argument("--profile", default="full", choices=sorted(PROFILES))
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--tag", default="", help="a named variant of the recipe, e.g. lr0.1x")
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--train-subset", type=_positive_int, help="balanced subset of the training set")
    t.add_argument("--device", type=_device, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    t.add_argument("--retrain", action="store_true", help="train again and replace a stored run")
    st = sub.add_parser("status", help="which runs of the plan exist and which are missing")
    st.add_argument("--profile", default="full", choices=sorted(PROFILES))
    st.add_argument("--measure", action="store_true",
                    help="time one training step of each model with no measured rate yet (cached; minutes)")
    st.add_argument("--workers", type=_positive_int, default=1,
                    help="estimate for the jobs of train-missing --workers N (their thread count)")
    st.add_argument("--record-recipe", action="store_true",
                    help="record each complete recipe check's choice as the full profile's recipe, replacing an "
                         "earlier one; its families' stored full runs of another setting are kept as that setting's "
                         "variant, and their runs of the chosen setting's variant become their own")
    m = sub.add_parser("train-missing", help="train the plan's missing runs within a time budget")
    m.add_argument("--budget", type=_positive_float, required=True, metavar="SECONDS")
    m.add_argument("--profile", default="full", choices=sorted(PROFILES))
    m.add_argument("--device", type=_device)
    m.add_argument("--workers", type=_positive_int, default=1,
                   help="train this many units at once, as separate processes on the one device")
    m.add_argument("--checkpoint-every", type=float, default=0.0, metavar="SECONDS",
                   help="checkpoint a run at most this often (0: after every epoch)")
    m.add_argument("--models", nargs="+", metavar="MODEL", help="only the runs of these models")
    m.add_argument("--policy", choices=("sequential", "units", "finish"),
                   help="sequential: run after run, the last one stops at the deadline and resumes next time "
                        "(default on a CPU); units: a family starts only if it fits (default on a GPU); "
                        "finish: run after run, but only those that fit in what is left at this job's threads, "
                        "judged again after a run's first epoch, then the first that waits fills the time left "
                        "(for a machine whose checkpoints may not last until the next call)")
    m.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # workers: shared time.time() limit
    m.add_argument("--claims", help=argparse.SUPPRESS)  # workers: the queue folder
    e = sub.add_parser("engine", help="this machine's engine checks (CPU precision and memory format); redo them")
    e.add_argument("models", nargs="*", metavar="MODEL", help="only these models (default: every one checked here)")
    e.add_argument("--recheck", action="store_true",
                   help="take the checks again now (with MODELs not checked yet: at this process's threads)")
    tb = sub.add_parser("tables", help="redo a stored run's after-training tables from its weights")
    tb.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    v = sub.add_parser("verify", help="check every stored run's files, the tables beside the runs and the records "
                       "of diverged runs; name the damaged ones")  # fmt: skip
    v.add_argument("--record-checksums", action="store_true",
                   help="add the checksums of the runs and tables stored without them (all must be sound)")
    sub.add_parser("readme", help="rewrite the README's results section from the stored runs")
    r = sub.add_parser("report", help="run the notebooks on the stored runs, export HTML (trains nothing)")
    r.add_argument("--profile", choices=sorted(PROFILES),
                   help="profile the notebooks show (default: from CNNLIB_PROFILE)")
    r.add_argument("--out", default="report", help="folder for the HTML report")
    r.add_argument("--in-place", action="store_true",
                   help="also save the executed notebooks over the committed ones (make refresh)")
    return p


def _profile_of(run_id: str) -> str:
    """The profile named in a run id (``<model>-<profile>[-<tag>]-s<seed>``), else PROFILE."""
    from .config import PROFILES

    parts = run_id.split("-")
    return parts[1] if len(parts) > 2 and parts[1] in PROFILES else "PROFILE"


def _status(args: argparse.Namespace) -> int:
    """The plan's runs (done, partly trained, diverged, damaged, missing), its recipe checks and the hours left."""
    from .plan import job_threads, measure_missing_rates, stage_hours_left, status

    threads = job_threads(args.workers)  # the jobs train-missing would start, not this process's threads
    if args.measure:
        for model in measure_missing_rates(args.profile, threads):
            print(f"measured one training step of {model}", flush=True)
    rows = status(args.profile, checkpoints=True)
    for st in rows:
        if st.state == "done":
            extra = (f"{st.config.scored} acc {st.test_acc:.4f}, "
                     f"{st.train_s / 60:.0f} min of training on {st.device_name}")  # fmt: skip
        elif st.state == "partly":
            extra = (f"{st.epochs_done}/{st.config.epochs} epochs"
                     + (f" and {st.steps_done} steps" if st.steps_done else "")
                     + f", {st.train_s / 60:.0f} min of training so far (checkpoint)")  # fmt: skip
        elif st.state == "diverged":
            extra = f"after {st.epochs_done} good epoch(s): {st.message}"
        elif st.state == "damaged":
            extra = st.message
        else:
            extra = ""
        print(f"{st.state:<8} {st.config.run_id:<34} {extra}")
    if args.profile == "full":
        _recipe_checks(args.record_recipe)
    print(f"training left on this machine, in hours of one training job (train-missing --workers {args.workers}: "
          f"{threads} thread(s) each) at the best rate measured on this device or CPU model: stored runs at any "
          "thread count, else an unfinished run's checkpoint, else a checked step at these threads, scaled by how "
          "much faster this CPU's stored runs went than their models' checks:")
    for name, hours, typical, unknown in stage_hours_left(args.profile, threads=threads):
        if unknown and not hours:  # nothing of the stage is rated: "0.0 h" would read as done
            print(f"  stage {name}: no measured rate yet for its {unknown} missing run(s) (--measure times them)")
            continue
        slower = f" ({typical:.1f} h at the median stored rates)" if f"{typical:.1f}" != f"{hours:.1f}" else ""
        note = f" (+{unknown} run(s) with no measured rate yet)" if unknown else ""
        print(f"  stage {name}: {hours:.1f} h{slower}{note}")
    missing = sum(st.state != "done" for st in rows)
    damaged = sum(st.state == "damaged" for st in rows)
    print(f"{len(rows) - missing}/{len(rows)} runs of the '{args.profile}' plan exist; {missing} missing"
          + (f", of which {damaged} damaged (restore them from git or retrain them: see above)" if damaged
             else ""))  # fmt: skip
    return 0


def _recipe_checks(record: bool) -> None:
    """Print each recipe check of the full profile: its runs, its choice (with ``record``, recorded as the full
    profile's recipe if it is not yet) and its table of held-out accuracies."""
    from . import recipe, render
    from .config import RECIPE_CHECKS
    from .results import DamagedRunError

    for name in RECIPE_CHECKS:
        try:
            check = recipe.table(check=name)
        except DamagedRunError as e:  # listed above as damaged; the other checks go on
            print(f"recipe check '{name}': cannot tell while a run of it is damaged: {e}")
            continue
        got = int(check.filter(like="held-out").notna().sum().sum())
        chosen = recipe.choice(check, name)
        if chosen and record and not recipe.applied(chosen, name):
            recipe.record(chosen, name)
        recorded = bool(chosen) and recipe.applied(chosen, name)
        again = [] if recorded else recipe.to_retrain(name)
        waits = f" until its families' seed 0 is trained again at it ({len(again)} run(s) to train)" if again else ""
        state = (f"chosen {chosen['setting']}" + ("" if recorded else f", not yet recorded as the full profile's "
                                                                      f"recipe{waits}")
                 if chosen else "not chosen yet")  # fmt: skip
        print(f"recipe check '{name}' ({', '.join(recipe.nets(name))}): "
              f"{got}/{len(recipe.nets(name)) * len(check)} runs; {state}")
        if got:  # as notebook 05 shows it: accuracies in %, the choice (or the best, unrecorded) and what diverged
            view = SimpleNamespace(nets=recipe.nets(name), table=check, chosen=chosen)
            mark = "chosen" if recorded else render.PENDING if again else "best, not yet recorded"
            print(render.check_table(view, mark).to_string())


def _verify(record: bool) -> int:
    """Check every stored run, every table beside the runs and every record of a diverged run; name the damaged ones
    (then fail); with ``record``, add the checksums of the runs and tables stored without them."""
    from .paths import results_root
    from .results import (
        DamagedRunError,
        check_run,
        read_divergence,
        read_table,
        record_checksums,
        record_table_checksums,
        stored_tables,
    )

    root = results_root()
    folders = [p for p in sorted(root.iterdir()) if (p / "run.json").exists()] if root.exists() else []
    kinds = [("stored runs", check_run, folders), ("tables beside them", read_table, stored_tables(root)),
             ("records of diverged runs", read_divergence, sorted((root / "diverged").glob("*.json")))]  # fmt: skip
    kinds = [kinds[0]] + [k for k in kinds[1:] if k[2]]  # the runs always; the others where there are any
    damaged = {}
    for what, check, items in kinds:
        for item in items:
            try:
                check(item)
            except DamagedRunError as e:
                damaged[what] = damaged.get(what, 0) + 1
                print(f"damaged {e}")

    def listed(parts: list[str]) -> str:
        return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]

    if damaged:
        counts = listed([f"{damaged.get(what, 0)} of the {len(items)} {what}" for what, _, items in kinds])
        raise ValueError(f"{counts} are damaged (listed above)")
    print(f"all {listed([f'{len(items)} {what}' for what, _, items in kinds])} in {shown(root)} are sound")
    if record:
        added = record_checksums(root)
        print(f"recorded the checksums of {len(added)} run(s) stored without them"
              + (f": {', '.join(added)}" if added else ""))  # fmt: skip
        if stored_tables(root):
            added = record_table_checksums(root)
            print(f"recorded the checksums of {len(added)} table(s) stored without them"
                  + (f": {', '.join(added)}" if added else ""))  # fmt: skip
    return 0


def _engine_command(models: list[str], recheck: bool) -> int:
    """List this machine's cached engine checks, or take them again (``--recheck``)."""
    import pandas as pd
    import torch

    from . import engine
    from .models import create_model
    from .train import stepper

    for name in models:
        create_model(name)  # an unknown name fails here, with the list of names
    prefix = f"{engine.cpu_name()}|torch {torch.__version__}|"
    mine = {}  # (model, batch, threads) -> this machine's check, of ``models`` if named
    for key, m in engine.cached_checks().items():
        if key.startswith(prefix):
            _, _, model, batch, threads = key.split("|")  # engine._key's fields
            if not models or model in models:
                mine[model, int(batch.split()[1]), int(threads.split()[1])] = m
    if recheck:
        threads = torch.get_num_threads()
        targets = [*mine, *((m, engine.CHECK_BATCH, threads) for m in models if not any(t[0] == m for t in mine))]
        if not targets:
            print("no engine checks cached on this machine; name the models to check (python -m cnnlib list)")
            return 0
        for model, batch, n in targets:
            torch.set_num_threads(n)
            m = engine.check(model, batch, n, stepper=stepper)
            print(f"{model} (batch {batch}, {n} thread(s)): {m['precision']}"
                  f"{' + channels_last' if m['channels_last'] else ''}; {engine.describe_check(m)}", flush=True)
        torch.set_num_threads(threads)
        return 0
    rows = [{"model": model, "batch": batch, "threads": threads,
             "choice": f"{m['precision']}{' + cl' if m['channels_last'] else ''}",
             **{f"{k} ms": round(1000 * v) for k, v in m["step_s"].items()}, "steps": m.get("rounds", 2),
             "others' CPU %": float("nan") if m.get("others_share") is None else round(100 * m["others_share"]),
             "state": ("in doubt" if m.get("doubted") else "trusted" if m.get("trusted") else
                       "provisional" if "trusted" in m else "old (load not recorded)"),
             "checked": m.get("checked", "")} for (model, batch, threads), m in sorted(mine.items())]  # fmt: skip
    cache = engine._cache_path()
    if not rows:
        print(f"no engine checks of {engine.cpu_name()} with torch {torch.__version__} in {shown(cache)}; "
              "a CPU run takes its check when it starts (or: python -m cnnlib engine MODEL --recheck)")
        return 0
    print(f"engine checks of {engine.cpu_name()} (torch {torch.__version__}) in {shown(cache)}; "
          "steps in ms (median); only trusted checks are reused and read by status's estimates:")
    print(pd.DataFrame(rows).to_string(index=False, na_rep="-"))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "list":
        from .models import FAMILIES

        for family, names in FAMILIES.items():
            print(f"{family:<12} {' '.join(names)}")
        return 0
    if args.command == "summary":
        from .analysis import model_summary

        print(model_summary(args.model, depth=3))
        return 0
    if args.command == "train":
        from .config import make_config
        from .results import fit_or_load, load_run

        configs = [make_config(model, args.profile, args.seed, tag=args.tag, epochs=args.epochs,
                               batch_size=args.batch_size, train_subset=args.train_subset)
                   for model in args.model]  # every name checked before the first run trains  # fmt: skip
        for cfg in configs:
            stored = None if args.retrain else load_run(cfg)  # fit_or_load returns a stored run untouched
            run = fit_or_load(cfg, retrain=args.retrain, device=args.device)
            f = run.final
            done = (f"{cfg.scored} accuracy {f['test_acc']:.4f} after {f['epochs']} epochs, "
                    f"{run.meta['train_s']:.0f} s of training on {run.meta['device_name']}")  # fmt: skip
            if stored is not None:
                print(f"{cfg.run_id}: loaded from {shown(run.path)}, not retrained (use --retrain); {done}")
            else:
                print(f"{cfg.run_id}: {done} -> {shown(run.path)}", flush=True)
        return 0
    if args.command == "status":
        return _status(args)
    if args.command == "train-missing":
        from pathlib import Path

        from .plan import train_missing

        train_missing(args.budget, args.profile, device=args.device, workers=args.workers,
                      checkpoint_every_s=args.checkpoint_every, deadline=args.deadline,
                      claims=Path(args.claims) if args.claims else None, models=args.models,
                      policy=args.policy)  # fmt: skip
        return 0
    if args.command == "engine":
        return _engine_command(args.models, args.recheck)
    if args.command == "tables":
        from .results import load_run, recompute_tables

        runs = {run_id: load_run(run_id) for run_id in args.run_ids}  # every name checked before any work
        missing = [run_id for run_id, run in runs.items() if run is None]
        if missing:
            raise ValueError(f"no stored run {', '.join(map(repr, missing))}; see python -m cnnlib status "
                             f"--profile {_profile_of(missing[0])} for the run ids")  # fmt: skip
        for run_id, run in runs.items():
            print(f"{run_id}: wrote {', '.join(recompute_tables(run))}", flush=True)
        return 0
    if args.command == "verify":
        return _verify(args.record_checksums)
    if args.command == "readme":
        from .summary import README, update_readme

        print(f"{README}: {'updated' if update_readme() else 'already up to date'}")
        return 0
    if args.command == "report":
        from .report import build_report

        build_report(profile=args.profile, out=args.out, in_place=args.in_place)
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .aftertrain import WeightsUnavailable
    from .report import NotebookFailed, ReportInterrupted
    from .results import DamagedRunError, StaleRunError
    from .runs import MissingRuns
    from .train import RunWontFit, TrainingDiverged

    signal.signal(signal.SIGTERM, _terminate)  # a kill, a job scheduler's stop: handled as Ctrl-C is
    try:
        return _run(args)
    except (ValueError, DataError, StaleRunError, DamagedRunError, WeightsUnavailable, TrainingDiverged, RunWontFit,
            MissingRuns, NotebookFailed) as e:  # fmt: skip
        print(f"error: {e}", file=sys.stderr)
    except ReportInterrupted as e:
        print(f"interrupted; {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; finished epochs are checkpointed and resume on the next run"
              if args.command in ("train", "train-missing") else "interrupted", file=sys.stderr)
        return 130
    return 2


def _terminate(signum, frame) -> None:
    """SIGTERM: stop as Ctrl-C does (the same cleanup, the same one line), and ignore a second one meanwhile."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
