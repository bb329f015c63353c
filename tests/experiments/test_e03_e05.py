"""Studies e03 and e05 at their quick size on a run pair trained for a few steps (C8, C12, C13, C14)."""

import pytest

from evoflow.train.config import TrainConfig
from evoflow.train.loop import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    for name, mixture in (("evo", "ar:0.5,sync:0.5"), ("ar", "ar")):
        train(TrainConfig(size="tiny", vocab=512, seq=16, batch=4, steps=4, eval_rows=4, mixture=mixture),
              root / name, progress=False)
    return root


def test_e03_scores_every_width_and_a_single_block_is_the_synchronous_path(runs, tmp_path):
    from evoflow.train.evaluate import score_path
    from evoflow.train.session import load_run
    from experiments.e03_interpolation import run as e03

    result = e03.main(["--evo", str(runs / "evo"), "--ar", str(runs / "ar"), "--rows", "4", "--quick",
                       "--out", str(tmp_path)])
    assert result["widths"] == [1, 4, 16] and (tmp_path / "interpolation.png").exists()
    run = load_run(runs / "evo")
    sync = score_path(run.model, run.rows[:4], "sync:16", t_min=run.config.t_min).bits
    assert result["runs"]["evo"]["bits"]["block:16"] == pytest.approx(sync, rel=1e-12)  # Staircase(L) = Synchronous
    assert result["runs"]["evo"]["bits"]["block:4"] != pytest.approx(sync, rel=1e-6)


def test_e05_costs_and_the_cache_changes_no_token(runs, tmp_path):
    from experiments.e05_trained_decoding import run as e05

    result = e05.main(["--evo", str(runs / "evo"), "--ar", str(runs / "ar"), "--batch", "2", "--quick",
                       "--out", str(tmp_path)])
    rows = {r["controller"]: r for r in result["rows"]}
    cached, plain = rows["ar"], rows["ar, no cache"]
    assert cached["baseline_ppl"] == plain["baseline_ppl"] and cached["distinct3"] == plain["distinct3"]
    assert cached["cache_hits"] > 0 and plain["cache_hits"] == 0 and cached["calls_per_token"] == 1.0
    assert rows["sync:4"]["calls_per_token"] == pytest.approx(4 / 16)
    assert 0 < rows["evo (defaults)"]["calls_per_token"] <= 1.0
    assert (tmp_path / "results.json").exists()
