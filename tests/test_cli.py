"""The evoflow command: the solver listing and the demo study's table, figure and report."""

import pytest

from evoflow import solvers
from evoflow.cli import main


def test_solvers_lists_every_registered_solver_with_kind_and_order(capsys):
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    for name in solvers.names():
        s = solvers.get(name)
        line = next(ln for ln in out.splitlines() if ln.split()[0] == name)
        assert line.split()[1:3] == [s.kind, str(s.order)]


def test_demo_writes_a_report_and_a_figure(tmp_path, capsys):
    assert main(["demo", "--quick", "--length", "3", "--vocab", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Staircase(block=1)" in out and "Synchronous()" in out and "Rolling(window=2)" in out
    (run,) = tmp_path.iterdir()
    report = (run / "report.md").read_text()
    assert "| rk4 | Synchronous() |" in report
    assert (run / "likelihood_vs_nfe.png").stat().st_size > 10_000


def test_bad_command_or_size_exits_with_usage(capsys):
    with pytest.raises(SystemExit):
        main(["frobnicate"])
    with pytest.raises(SystemExit):
        main(["verify", "--vocab", "0"])
    assert "must be a positive integer" in capsys.readouterr().err
