"""Study e04 at its quick size: the Evo defaults are the recommended row, near AR quality at fewer calls (C14)."""

import json

import pytest

from experiments.e04_adaptive_decoding import run as e04


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("e04")
    result = e04.main(["--quick", "--out", str(out)])
    return out, result


def test_the_quick_study_writes_its_files_and_the_defaults_row_is_the_recommended_setting(quick):
    out, result = quick
    assert json.loads((out / "results.json").read_text())["L"] == 16 and (out / "calls_quality.png").exists()
    rows = {r["controller"]: r for r in result["rows"]}
    assert rows["evo (defaults)"] == {**rows["evo k=16 thr=0.99"], "controller": "evo (defaults)"}


def test_evo_is_near_ar_quality_at_fewer_calls_and_beats_synchronous_at_equal_calls(quick):
    _, result = quick
    rows = {r["controller"]: r for r in result["rows"]}
    evo, ar, L = rows["evo (defaults)"], rows["ar"], result["L"]
    assert evo["calls"] < 0.8 * L and ar["calls"] == L
    assert evo["nll"] <= ar["nll"] + 0.5  # within half a nat per sequence of AR's samples
    assert evo["nll"] < rows[f"sync:{L}"]["nll"]  # better samples than synchronous decoding with L calls
    assert rows[f"sync:{L // 2}"]["nll"] > rows[f"sync:{L}"]["nll"]  # the metric sees the parallel-step price


def test_the_pair_distance_is_zero_for_the_exact_pair_law():
    import torch

    oracle = e04.easy_hard_oracle(6)
    x = oracle.sample(20000, generator=torch.Generator().manual_seed(0))
    assert e04.pair_tv(oracle, x) < 0.03  # sampling noise only
    shuffled = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))]
    broken = torch.cat([x[:, :3], shuffled[:, 3:]], 1)  # breaks the dependence between positions 2 and 3
    assert e04.pair_tv(oracle, broken) > e04.pair_tv(oracle, x) + 0.02
