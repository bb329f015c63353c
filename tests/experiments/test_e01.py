"""Study e01 (experiments/e01_unified_elbo): its quick run writes every file, and its numbers say what its
README claims (C3-C8 on an exact oracle; the verify rows C1-C14)."""

import itertools
import json

import pytest
import torch

import evoflow as ef
from experiments.e01_unified_elbo import run as e01


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("e01")
    return out, e01.main(["--quick", "--out", str(out)])


def _exact_law():
    """p(x) of the study's oracle by enumeration, rebuilt here from its documented construction."""
    oracle = ef.MarkovOracle.random(3, 4, 2, ef.get_schedule("cosine"), torch.Generator().manual_seed(0))
    xs = torch.tensor(list(itertools.product(range(3), repeat=4)))
    return oracle.log_prob(xs).exp().reshape(3, 3, 3, 3)


def test_the_quick_run_writes_the_results_the_figures_the_verify_report_and_the_readme(quick):
    out, result = quick
    for name in ("results.json", "README.md", "nelbo_k.png", "verify/report.md", "verify/nelbo_vs_steps.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["verify"]["verdict"] == result["verify"]["verdict"]
    assert (out / "README.md").read_text() == e01.readme(saved)  # the README is a function of results.json


def test_every_verify_row_that_ran_holds(quick):
    rows = quick[1]["verify"]["rows"]
    assert len(rows) >= 8 and {r["verdict"] for r in rows} <= {"pass", "n/a"}
    assert quick[1]["verify"]["verdict"].startswith("Verdict: all")


def test_the_gaussian_gap_is_a_bound_on_average_and_shrinks_on_every_path(quick):
    """Gibbs: E_x NELBO_K >= E_x[-log p(x)] for any reverse model, so no gap is significantly negative; C4: the
    gap falls as K grows (8 times the steps must at least halve it, O(1/K) would divide it by about 8)."""
    for name, r in quick[1]["nelbo"]["kernels"]["gaussian"]["paths"].items():
        assert all(g > -4 * s for g, s in zip(r["gap"], r["se"], strict=True)), name
        assert r["gap"][0] > 1.0 and r["gap"][-1] < r["gap"][0] / 2, name


def test_the_mixture_kernel_is_exact_along_ar_at_every_step_count(quick):
    """C7: with the exact posterior the mixture kernel is the true reverse kernel along Staircase(1)."""
    r = quick[1]["nelbo"]["kernels"]["mixture"]["paths"]["AR"]
    assert len(r["steps"]) >= 3 and max(r["max_abs"]) < 1e-8


def test_one_synchronous_mixture_step_costs_the_total_correlation_and_more_steps_cost_less(quick):
    """C8: at K = 1 (t_min = 1e-3) the data-averaged gap is TC = sum_i H(x_i) - H(x), computed here by enumeration."""
    p = _exact_law()
    H = float(-(p * p.log()).sum())
    marginals = [p.sum(dim=tuple(j for j in range(4) if j != i)) for i in range(4)]
    tc = sum(float(-(m * m.log()).sum()) for m in marginals) - H
    part = quick[1]["nelbo"]
    assert part["total_correlation"] == pytest.approx(tc, abs=1e-12)
    sync = part["kernels"]["mixture"]["paths"]["synchronous"]
    assert sync["steps"][0] == 1 and abs(sync["gap"][0] - tc) < 1e-3 < tc
    for name in ("synchronous", "block"):
        r = part["kernels"]["mixture"]["paths"][name]
        assert r["gap"][-1] < r["gap"][0] / 2, name


def test_the_committed_readme_is_the_committed_results_rendered():
    saved = e01.HERE / "results.json"
    if not saved.exists():
        pytest.skip("the full run has not been committed")
    result = json.loads(saved.read_text())
    assert not result["quick"]
    assert (e01.HERE / "README.md").read_text() == e01.readme(result)


@pytest.mark.slow
def test_the_full_run_converges_on_every_path(tmp_path):
    """The full size: the Gaussian gap ends within 4 SE (plus 0.1 nats of O(1/K) bias) of 0 on every path."""
    result = e01.main(["--out", str(tmp_path)])
    assert {r["verdict"] for r in result["verify"]["rows"]} <= {"pass", "n/a"}
    for name, r in result["nelbo"]["kernels"]["gaussian"]["paths"].items():
        assert abs(r["gap"][-1]) < 4 * r["se"][-1] + 0.1, name
