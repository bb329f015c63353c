"""The evoflow command: the solver listing, the likelihood study's table, figure and report, and bad invocations."""

import json
import sys

import pytest

from evoflow import solvers
from evoflow.cli import build_parser, main


def test_solvers_lists_every_registered_solver_with_the_columns_its_help_promises(capsys):
    assert main(["solvers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "kind", "order", "adaptive"]
    for name in solvers.names():
        s = solvers.get(name)
        line = next(ln for ln in lines if ln.split()[0] == name)
        assert line.split()[1:] == [s.kind, str(s.order), "yes" if s.adaptive else "no"]
    assert "(name, kind, order, adaptive)" in build_parser().format_help()


def test_study_writes_a_report_and_a_figure(tmp_path, capsys):
    assert main(["study", "--quick", "--length", "3", "--vocab", "3", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "Staircase(block=1)" in captured.out and "Synchronous()" in captured.out
    assert "Rolling(window=2)" in captured.out
    assert captured.err == ""  # stderr is no terminal here: no progress bar
    (run,) = tmp_path.iterdir()
    report = (run / "report.md").read_text()
    assert "| rk4 | Synchronous() |" in report
    assert "differ by at most" in report and "Most accurate run per path" in report
    assert (run / "likelihood_vs_nfe.png").stat().st_size > 10_000


def _bad(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.mark.parametrize(("argv", "names"), [
    ([], "command"),
    (["frobnicate"], "frobnicate"),
    (["verify", "--vocab", "abc"], "--vocab: expected an integer >= 2, got 'abc'"),
    (["verify", "--vocab", "1"], "--vocab: expected an integer >= 2, got '1'"),
    (["study", "--vocab", "0"], "--vocab"),
    (["verify", "--length", "1"], "--length"),
    (["study", "--length", "-3"], "--length"),
    (["verify", "--dim", "2.5"], "--dim"),
    (["verify", "--seed", "x"], "--seed"),
    (["verify", "--schedule", "nope"], "--schedule"),
    (["verify", "--bogus"], "--bogus"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_invocation_is_one_line_naming_the_argument_and_status_two(argv, names, capsys):
    code, out, err = _bad(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and names in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["study", "verify"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the study ran before the output folder was checked")

    monkeypatch.setattr("evoflow.cli.likelihood_study", no_work)
    monkeypatch.setattr("evoflow.verify.run_all", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out_dir in (str(blocker), str(blocker / "below")):  # a file, and a folder below a file
        code, out, err = _bad([command, "--out", out_dir], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert err.startswith(f"evoflow {command}: error: --out: cannot create or write") and "Traceback" not in err


def test_help_shows_defaults_without_markup(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0
    assert "(default: 3)" in out and "(default: cosine)" in out and "(default: runs)" in out
    assert "seed of the random oracle (default: 0)" in out and "(default: False)" not in out
    top = build_parser().format_help()
    assert "``" not in out and "``" not in top


def test_progress_goes_to_stderr_on_a_terminal_and_never_into_the_json(tmp_path, capsys, monkeypatch):
    import evoflow.verify as verify

    monkeypatch.setattr(verify, "CHECKS", (verify.check_c3, verify.check_c10))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["verify", "--json", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["passed"] and "verify" in captured.err  # the tqdm bar
    assert main(["verify", "--json", "--quiet", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
