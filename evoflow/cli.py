"""The ``evoflow`` command: ``solvers`` lists the registry, ``demo`` runs the likelihood study, ``verify``
checks every claim of THEORY.md on a fresh exact oracle (exit status 1 if one fails)."""

from __future__ import annotations

import argparse
import datetime as _dt
import pathlib
import sys
import time

import torch

from evoflow import solvers as _solvers
from evoflow.study import fitted_order, likelihood_study, write_report

__all__ = ["main"]


def _cmd_solvers(args: argparse.Namespace) -> int:
    print(f"{'name':<22} {'kind':<5} {'order':>5}  adaptive")
    for name in _solvers.names():
        s = _solvers.get(name)
        print(f"{name:<22} {s.kind:<5} {s.order:>5}  {'yes' if s.adaptive else 'no'}")
    return 0


def _run_dir(root: str, kind: str) -> pathlib.Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path(root) / f"{kind}-{stamp}"


def _cmd_demo(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation
    start = time.perf_counter()
    settings = {"vocab": args.vocab, "length": args.length, "dim": 2, "schedule": args.schedule,
                "t_min": 0.2, "batch": 4, "seed": args.seed}
    print("evoflow demo: exact log-likelihood through the flow (C11) on a Markov oracle,")
    print(f"for every deterministic solver along three paths (C2). Settings: {settings}\n")
    rows = likelihood_study(quick=args.quick, **settings)
    print(f"{'solver':<20} {'path':<20} {'NFE : max |error| of log p':<58} slope order")
    series: dict = {}
    for r in rows:
        series.setdefault((r.solver, r.path), []).append(r)
    for (solver, path), rs in series.items():
        cells = "  ".join(f"{r.nfe:>4}:{r.error:7.1e}" for r in rs)
        print(f"{solver:<20} {path:<20} {cells:<58} {fitted_order(rs):5.2f} {rs[0].order:>5}")
    outdir = _run_dir(args.out, "demo")
    report = write_report(rows, outdir, "evoflow demo " + " ".join(sys.argv[2:]), settings)
    print(f"\nreport: {report}\nfigure: {outdir / 'likelihood_vs_nfe.png'}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from evoflow.verify import Settings, run_all
    from evoflow.verify_report import report, table

    torch.set_num_threads(1)
    settings = Settings(vocab=args.vocab, length=args.length, dim=args.dim, schedule=args.schedule, seed=args.seed)
    start = time.perf_counter()
    rows, series = run_all(settings)
    outdir = _run_dir(args.out, "verify")
    report(rows, series, settings, outdir, "evoflow verify " + " ".join(sys.argv[2:]))
    failed = any(r.verdict == "FAIL" for r in rows)
    if args.json:
        print(json.dumps({"settings": dataclasses.asdict(settings), "claims": [dataclasses.asdict(r) for r in rows],
                          "passed": not failed, "report": str(outdir / "report.md")}, indent=2))
    else:
        print(table(rows))
        print(f"\n{'all claims hold' if not failed else 'SOME CLAIMS FAILED'}; report: {outdir / 'report.md'} "
              f"({time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _oracle_options(parser: argparse.ArgumentParser, vocab: int, length: int) -> None:
    """The options every oracle-based command shares: problem size, schedule, seed, output folder."""
    parser.add_argument("--vocab", type=_positive, default=vocab, help="vocabulary size V")
    parser.add_argument("--length", type=_positive, default=length, help="sequence length L")
    parser.add_argument("--schedule", default="cosine", choices=["linear", "cosine", "loglinear"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs", help="folder for the run's report")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``evoflow`` command."""
    parser = argparse.ArgumentParser(prog="evoflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("solvers", help="list registered solvers (name, kind, order)").set_defaults(func=_cmd_solvers)
    demo = sub.add_parser("demo", help="likelihood-error-vs-NFE study on a Markov oracle")
    _oracle_options(demo, vocab=4, length=4)
    demo.add_argument("--quick", action="store_true", help="two budgets per series instead of five")
    demo.set_defaults(func=_cmd_demo)
    verify = sub.add_parser("verify", help="check every claim of THEORY.md on a fresh exact oracle")
    _oracle_options(verify, vocab=3, length=3)
    verify.add_argument("--dim", type=_positive, default=2, help="embedding dimension d")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.set_defaults(func=_cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evoflow`` command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
