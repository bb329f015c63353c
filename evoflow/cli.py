"""The evoflow command (docs/theory.md as a program).

  evoflow demo      the main job: verify's summary, train Evo and an AR baseline on text, compare them (C9, C13)
  evoflow train     train the time-conditioned Transformer; evoflow eval scores a trained run
  evoflow sample    text from a trained run along a decoding controller (evo, ar, sync:K, block:B, rolling:W)
  evoflow solvers   list the registered solvers: name, kind, order, adaptive
  evoflow study     exact log-likelihood error against network calls on a Markov oracle (C2, C11)
  evoflow verify    check every claim of docs/theory.md on a fresh exact oracle (exit status 1 if one fails)

A bad invocation prints one line naming the argument on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import pathlib
import sys
import time

import torch

from evoflow import solvers as _solvers
from evoflow.cli_sample import add_sample_command
from evoflow.cli_train import add_commands, usage_error, writable_folder
from evoflow.study import fitted_order, likelihood_study, write_report

__all__ = ["UsageError", "build_parser", "main"]


class UsageError(Exception):
    """A bad argument found after parsing (an output folder that cannot be written, inconsistent sizes);
    :func:`main` reports it as one line and exit status 2, like a parse error (THEORY section 7 sizes)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``evoflow verify: error: --vocab: ...`` and exit status 2, no usage dump."""

    def error(self, message: str):
        message = " ".join(message.split()).removeprefix("argument ")
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help with the descriptions kept as written and every non-trivial default shown (not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        trivial = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not trivial and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _integer(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, else a one-line message quoting the text."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _cmd_solvers(args: argparse.Namespace) -> int:
    print(f"{'name':<22} {'kind':<5} {'order':>5}  adaptive")
    for name in _solvers.names():
        s = _solvers.get(name)
        print(f"{name:<22} {s.kind:<5} {s.order:>5}  {'yes' if s.adaptive else 'no'}")
    return 0


def _run_dir(root: str, kind: str) -> pathlib.Path:
    """Create ``root/kind-YYYYmmdd-HHMMSS`` and prove it writable before any work, else :class:`UsageError`."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return writable_folder(pathlib.Path(root) / f"{kind}-{stamp}", UsageError)


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars go to stderr, only when it is a terminal and --quiet is not given."""
    return not args.quiet and sys.stderr.isatty()


def _cmd_study(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation
    outdir = _run_dir(args.out, "study")
    start = time.perf_counter()
    settings = {"vocab": args.vocab, "length": args.length, "dim": 2, "schedule": args.schedule,
                "t_min": 0.2, "batch": 4, "seed": args.seed}
    print("evoflow study: exact log-likelihood through the flow (C11) on a Markov oracle,")
    print(f"for every deterministic solver along three paths (C2). Settings: {settings}\n")
    rows = likelihood_study(quick=args.quick, progress=_progress(args), **settings)
    print(f"{'solver':<20} {'path':<20} {'NFE : max |error| of log p':<58} slope order")
    series: dict = {}
    for r in rows:
        series.setdefault((r.solver, r.path), []).append(r)
    for (solver, path), rs in series.items():
        cells = "  ".join(f"{r.nfe:>4}:{r.error:7.1e}" for r in rs)
        print(f"{solver:<20} {path:<20} {cells:<58} {fitted_order(rs):5.2f} {rs[0].order:>5}")
    report = write_report(rows, outdir, "evoflow study " + " ".join(sys.argv[2:]), settings)
    print(f"\nreport: {report}\nfigure: {outdir / 'likelihood_vs_nfe.png'}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from evoflow.verify import Settings, run_all
    from evoflow.verify.context import check_settings
    from evoflow.verify_report import report, table, verdict_line

    torch.set_num_threads(1)
    settings = Settings(vocab=args.vocab, length=args.length, dim=args.dim, schedule=args.schedule, seed=args.seed)
    try:
        check_settings(settings)
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None
    outdir = _run_dir(args.out, "verify")
    start = time.perf_counter()
    rows, series = run_all(settings, progress=_progress(args))
    report(rows, series, settings, outdir, "evoflow verify " + " ".join(sys.argv[2:]))
    failed = any(r.verdict == "FAIL" for r in rows)
    if args.json:
        print(json.dumps({"settings": dataclasses.asdict(settings), "claims": [dataclasses.asdict(r) for r in rows],
                          "observations": series.get("observations", []), "passed": not failed,
                          "report": str(outdir / "report.md")}, indent=2))
    else:
        print(table(rows))
        print(f"\n{verdict_line(rows)} Report: {outdir / 'report.md'} ({time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0


def _oracle_options(parser: argparse.ArgumentParser, vocab: int, length: int, min_length: int) -> None:
    """The options every oracle-based command shares: problem size, schedule, seed, output folder."""
    parser.add_argument("--vocab", type=_integer(2, "an integer >= 2"), default=vocab, help="vocabulary size V")
    parser.add_argument("--length", type=_integer(min_length, f"an integer >= {min_length}"), default=length,
                        help="sequence length L")
    parser.add_argument("--schedule", default="cosine", choices=["linear", "cosine", "loglinear"],
                        help="noise schedule alpha(t), sigma(t)")
    parser.add_argument("--seed", type=_integer(0, "an integer >= 0"), default=0, help="seed of the random oracle")
    parser.add_argument("--out", default="runs", help="where the run's report folder goes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (none when stderr is not a terminal)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``evoflow`` command (one-line errors, exit status 2; THEORY section 7 sizes)."""
    parser = _Parser(prog="evoflow", description=__doc__, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    sub.add_parser("solvers", help="list registered solvers (name, kind, order, adaptive)",
                   description="List the registered solvers: name, kind (ode or sde), order, adaptive (yes or no).",
                   formatter_class=_Formatter).set_defaults(func=_cmd_solvers)
    study = sub.add_parser("study", help="likelihood-error-vs-NFE study on a Markov oracle", formatter_class=_Formatter,
                           description="Exact log-likelihood through the probability flow (C11) along three paths "
                                       "(C2) with every deterministic solver: error against network calls.")
    _oracle_options(study, vocab=4, length=4, min_length=1)
    study.add_argument("--quick", action="store_true", help="two budgets per series instead of five")
    study.set_defaults(func=_cmd_study)
    add_commands(sub, _Formatter)
    add_sample_command(sub, _Formatter, usage_error())
    verify = sub.add_parser("verify", help="check every claim of docs/theory.md on a fresh exact oracle",
                            formatter_class=_Formatter,
                            description="Check claims C1-C14 of docs/theory.md numerically on a random Markov oracle; "
                                        "exit status 1 if a check fails.")
    _oracle_options(verify, vocab=3, length=3, min_length=2)
    verify.add_argument("--dim", type=_integer(1, "an integer >= 1"), default=2, help="embedding dimension d")
    verify.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    verify.set_defaults(func=_cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evoflow`` command (demo, train, eval, solvers, the C2/C11 study, verify of C1-C14);
    returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, usage_error()) as exc:
        sub = f"{parser.prog} {args.command}"
        parser.exit(2, f"{sub}: error: {exc}\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
