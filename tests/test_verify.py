"""evoflow verify: all claims hold on fresh oracles, the JSON output, the exit status."""

import json

import pytest

import evoflow.verify as verify
from evoflow.cli import main


@pytest.mark.parametrize("args", [["--seed", "1"], ["--schedule", "linear", "--seed", "2", "--vocab", "4"]])
def test_verify_passes_and_reports(args, tmp_path, capsys):
    assert main(["verify", *args, "--json", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    claims = {row["claim"] for row in out["claims"]}
    assert {f"C{i}" for i in range(1, 13)} <= claims
    assert out["passed"] and all(row["verdict"] in ("pass", "n/a") for row in out["claims"])
    (run,) = tmp_path.iterdir()
    assert "| C7 |" in (run / "report.md").read_text()
    assert (run / "nelbo_vs_steps.png").exists() and (run / "estimator_variance.png").exists()


def test_claims_that_assume_an_exact_prior_are_not_applicable_for_loglinear():
    ctx = verify.make_context(verify.Settings(schedule="loglinear"))
    rows = verify.check_c7(ctx)
    assert all(r.verdict == "n/a" for r in rows) and rows[0].measured > 1e-6  # alpha(1) > 0: not exact


def test_a_failing_claim_makes_the_exit_status_one(monkeypatch, tmp_path, capsys):
    def broken(ctx):
        return verify.ClaimResult("C3", "deliberately wrong", 1.0, "< 1e-9", "FAIL")

    monkeypatch.setattr(verify, "CHECKS", (broken,))
    assert main(["verify", "--out", str(tmp_path)]) == 1
    assert "SOME CLAIMS FAILED" in capsys.readouterr().out
