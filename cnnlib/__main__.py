"""Command line: ``python -m cnnlib {list,summary,train,status,train-missing,report}``.

User errors (unknown model or profile, bad numbers, missing data) print one
line and exit with status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .data import DataError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, no usage dump: the message names what was wrong."""
        self.exit(2, f"error: {message} (see python -m cnnlib --help)\n")


def _parser() -> argparse.ArgumentParser:
    from .train import PROFILES

    p = _Parser(prog="python -m cnnlib", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the registered models by family")
    s = sub.add_parser("summary", help="torchinfo table of a model")
    s.add_argument("model")
    t = sub.add_parser("train", help="train one run (or load it if stored) and store it")
    t.add_argument("model")
    t.add_argument("--profile", default="full", choices=sorted(PROFILES))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--train-subset", type=_positive_int, help="balanced subset of the training set")
    t.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    t.add_argument("--retrain", action="store_true", help="train again and replace a stored run")
    st = sub.add_parser("status", help="which runs of the plan exist and which are missing")
    st.add_argument("--profile", default="full", choices=sorted(PROFILES))
    m = sub.add_parser("train-missing", help="train the plan's missing runs within a time budget")
    m.add_argument("--budget", type=_positive_float, required=True, metavar="SECONDS")
    m.add_argument("--profile", default="full", choices=sorted(PROFILES))
    m.add_argument("--device")
    r = sub.add_parser("report", help="train missing runs (GPU only), execute the notebooks, export HTML")
    r.add_argument("--profile", default=None, help="profile the notebooks show (default: from CNNLIB_PROFILE)")
    r.add_argument("--out", default="report", help="folder for the HTML report")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.command == "list":
        from .models import FAMILIES

        for family, names in FAMILIES.items():
            print(f"{family:<12} {' '.join(names)}")
        return 0
    if args.command == "summary":
        import torchinfo

        from .models import create_model

        print(torchinfo.summary(create_model(args.model), input_size=(1, 3, 32, 32), depth=3, verbose=0))
        return 0
    if args.command == "train":
        from .results import fit_or_load
        from .train import make_config

        cfg = make_config(
            args.model, args.profile, args.seed,
            epochs=args.epochs, batch_size=args.batch_size, train_subset=args.train_subset,
        )  # fmt: skip
        run = fit_or_load(cfg, retrain=args.retrain or None, device=args.device)
        f = run.final
        print(f"{cfg.run_id}: test accuracy {f['test_acc']:.4f} after {f['epochs']} epochs, "
              f"{run.meta['train_s']:.0f} s of training on {run.meta['device_name']} -> {run.path}")  # fmt: skip
        return 0
    if args.command == "status":
        from .plan import status

        rows = status(args.profile)
        for st in rows:
            extra = (f"test acc {st.test_acc:.4f}, {st.train_s:.0f} s on {st.device_name}"
                     if st.state == "done" else "")  # fmt: skip
            print(f"{st.state:<8} {st.config.run_id:<28} {extra}")
        missing = sum(st.state != "done" for st in rows)
        print(f"{len(rows) - missing}/{len(rows)} runs of the '{args.profile}' plan exist; {missing} missing")
        return 0
    if args.command == "train-missing":
        from .plan import train_missing

        train_missing(args.budget, args.profile, device=args.device)
        return 0
    if args.command == "report":
        from .report import build_report

        build_report(profile=args.profile, out=args.out)
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .results import StaleRunError
    from .train import TrainingDiverged

    try:
        return _run(args)
    except KeyError as e:  # unknown model, from the registry
        print(f"error: {e.args[0]}", file=sys.stderr)
    except (ValueError, DataError, StaleRunError, TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; finished epochs are checkpointed and resume on the next run", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
