"""evoflow verify: the claims hold on fresh oracles, the JSON output, the exit status, the report's sentences."""

import json
import math

import pytest
import torch
from scipy.stats import chi2, chisquare

import evoflow.verify as verify
import evoflow.verify.mixture as mixture_module
from evoflow.cli import main
from evoflow.verify.decoding import check_c14, chi2_sf, chi_square
from evoflow.verify.mixture import check_c7, check_c8, check_c13
from evoflow.verify_report import reading, verdict_line


@pytest.mark.parametrize("args", [["--seed", "1"], ["--schedule", "linear", "--seed", "2", "--vocab", "4"]])
def test_verify_passes_and_reports(args, tmp_path, capsys):
    assert main(["verify", *args, "--json", "--quiet", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    claims = {row["claim"] for row in out["claims"]}
    assert {f"C{i}" for i in range(1, 15)} <= claims
    assert out["passed"] and all(row["verdict"] == "pass" for row in out["claims"])  # alpha(1) = 0: nothing n/a
    (run,) = tmp_path.iterdir()
    report = (run / "report.md").read_text()
    assert "| C7 |" in report and f"Verdict: all {len(out['claims'])} checked rows hold." in report
    assert (run / "nelbo_vs_steps.png").exists() and (run / "estimator_variance.png").exists()


def test_loglinear_runs_c7_with_the_exact_prior_and_says_why_the_jump_row_cannot():
    ctx = verify.make_context(verify.Settings(schedule="loglinear"))
    exact_prior, jumps = check_c7(ctx)
    # with log p_1 as prior the per-trajectory NELBO telescopes to -log p(x) (THEORY C7), alpha(1) or not
    assert exact_prior.verdict == "pass" and exact_prior.measured < 1e-8
    # the jump limit conditions on tokens at t = 1, which carry information unless alpha(1) = 0
    alpha1 = math.sqrt(1 / (1 + math.exp(12.0)))  # loglinear: alpha(1)^2 = sigmoid(gamma_min = -12)
    assert jumps.verdict == "n/a" and f"alpha(1) = {alpha1:.3g}" in jumps.note and jumps.measured > 1e-6
    marginals, falls = check_c8(ctx)
    assert marginals.verdict == "n/a" and "alpha(1) = 0" in marginals.note
    assert falls.verdict == "pass"  # the parallel-step gap needs only an exact prior


def test_loglinear_makes_c13s_oracle_row_n_a_and_says_why():
    ctx = verify.make_context(verify.Settings(schedule="loglinear"))
    exact, transformer = check_c13(ctx)
    # the AR law reads the latents at t = 1 as zeros, an observation that still carries x when alpha(1) > 0
    alpha1 = math.sqrt(1 / (1 + math.exp(12.0)))  # loglinear: alpha(1)^2 = sigmoid(gamma_min = -12)
    assert exact.verdict == "n/a" and f"alpha(1) = {alpha1:.3g}" in exact.note and exact.measured > 1e-8
    assert transformer.verdict == "pass"  # the Transformer carries its own (linear) schedule: alpha(1) = 0


def test_c13s_transformer_row_is_n_a_for_a_transformer_with_alpha_one_positive(monkeypatch):
    from evoflow.nn import EvoTransformer, get_config

    monkeypatch.setattr(mixture_module, "tiny_transformer",
                        lambda ctx, generator: EvoTransformer(get_config("tiny", layers=3, schedule="loglinear")))
    _, row = check_c13(verify.make_context(verify.Settings()))
    assert row.verdict == "n/a" and "needs alpha(1) = 0" in row.note and "(n/a: alpha(1) = 0.00248)" in row.expected


def test_loglinear_makes_c14s_law_row_n_a_and_keeps_the_limits_row():
    limits, laws = check_c14(verify.make_context(verify.Settings(schedule="loglinear")))
    # the limits are a statement about grids (the step of eq. (1) is 1 or 1/K whatever the model says): they hold
    assert limits.verdict == "pass" and limits.measured == 0.0
    # the laws need the first posterior to be the prior (a token at t = 1 carries nothing), false when alpha(1) > 0
    alpha1 = math.sqrt(1 / (1 + math.exp(12.0)))  # loglinear: alpha(1)^2 = sigmoid(gamma_min = -12)
    assert laws.verdict == "n/a" and f"alpha(1) = {alpha1:.3g}" in laws.note and "chi2 = " in laws.note


@pytest.mark.parametrize("df", [1, 2, 3, 7, 26, 63, 255, 1000])
def test_the_chi_square_tail_matches_scipy(df):
    """The p-value of the C14 row without scipy: against scipy.stats.chi2.sf across the body and both tails."""
    for q in (1e-300, 1e-12, 1e-6, 0.01, 0.3, 0.5, 0.9, 0.999, 1 - 1e-9):
        x = float(chi2.isf(q, df))
        assert chi2_sf(x, df) == pytest.approx(float(chi2.sf(x, df)), rel=1e-9)
    assert chi2_sf(0.0, df) == 1.0 and chi2_sf(math.inf, df) == 0.0
    with pytest.raises(ValueError, match="df"):
        chi2_sf(1.0, 0)


def test_the_chi_square_test_pools_sparse_cells_and_refuses_impossible_draws():
    counts = torch.tensor([30.0, 52, 11, 4, 2, 1], dtype=torch.float64)
    probs = torch.tensor([0.3, 0.5, 0.12, 0.05, 0.02, 0.01], dtype=torch.float64)
    stat, df, p = chi_square(counts, probs)
    # expected 30, 50, 12, 5, 2, 1: the cells below 5 (2 and 1) pool into one of 3, itself still below 5,
    # so the next smallest (5) joins: bins 30, 50, 12, 8 against observed 30, 52, 11, 7
    ref = chisquare([30, 52, 11, 7], [30, 50, 12, 8])
    assert df == 3 and stat == pytest.approx(float(ref.statistic), rel=1e-12) and p == pytest.approx(
        float(ref.pvalue), rel=1e-9)
    zero = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    assert chi_square(torch.tensor([10.0, 9, 1]), zero)[2] == 0.0  # a draw of probability 0: rejected
    assert chi_square(torch.tensor([10.0, 10, 0]), zero)[2] == 1.0  # none drawn: the cell is no evidence


@pytest.mark.parametrize(("field", "value"), [("vocab", 1), ("length", 1), ("dim", 0), ("schedule", "nope")])
def test_degenerate_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        verify.make_context(verify.Settings(**{field: value}))


def test_a_failing_claim_makes_the_exit_status_one(monkeypatch, tmp_path, capsys):
    def broken(ctx):
        return verify.ClaimResult("C3", "deliberately wrong", 1.0, "< 1e-9", "FAIL")

    monkeypatch.setattr(verify, "CHECKS", (broken, verify.check_c10))
    assert main(["verify", "--out", str(tmp_path)]) == 1
    assert "Verdict: 1 of 2 checked rows FAILED (C3)." in capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    assert "- C3, the Gaussian step KL is 1/2 (SNR_s - SNR_t) |e - ehat|^2: FAILED." in (run / "report.md").read_text()


def test_the_report_sentences_follow_the_verdicts():
    rows = [verify.ClaimResult("C7", "a", 0.0, "< 1", "pass"), verify.ClaimResult("C7", "b", 2.0, "< 1", "n/a", "why"),
            verify.ClaimResult("C8", "c", 3.0, "< 1", "n/a", "why")]
    assert verdict_line(rows) == "Verdict: all 1 checked rows hold; 2 row(s) n/a (see the notes)."
    lines = reading(rows)
    assert ": holds where it could run (1 of 2 rows n/a)." in lines[0] and ": could not run." in lines[1]
    rows[0].verdict = "FAIL"
    assert verdict_line(rows).startswith("Verdict: 1 of 1 checked rows FAILED (C7)")
    assert ": FAILED." in reading(rows)[0]


def test_run_all_takes_a_subset_and_a_transform():
    seen = []

    def spy(oracle):
        seen.append(oracle)
        return oracle

    rows, series = verify.run_all(verify.Settings(), transform=spy, checks=[verify.check_c3])
    assert [r.claim for r in rows] == ["C3"] and len(seen) == 1 and series["observations"] == []
