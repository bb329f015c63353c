"""``evoflow demo`` end to end at a tiny size: verify's summary, two runs, the table and report.md (C9, C13)."""

import re

import evoflow.demo as demo
from evoflow.train.config import TrainConfig


def test_the_demo_trains_both_models_and_reports_the_gap_it_measured(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO", TrainConfig(size="tiny", data="pydoc", vocab=512, seq=32, batch=4, steps=3,
                                                  eval_every=3, checkpoint_every=3, eval_rows=4))
    monkeypatch.setattr(demo, "PATHS", ("ar", "sync:4", "rolling:2:8", "block:4"))
    report = demo.run_demo(tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "Verdict:" in out and "training evo" in out and "training ar" in out
    text = report.read_text()
    rows = {m[0]: [float(v) for v in re.findall(r"(\d+\.\d{4})(?: \+-)?", m[1])]
            for m in re.findall(r"^\| (evo|ar) \|(.*)\|$", text, re.MULTILINE)}
    assert set(rows) == {"evo", "ar"} and all(len(v) == 4 for v in rows.values())
    gap = 100 * (rows["evo"][0] - rows["ar"][0]) / rows["ar"][0]
    assert f"a gap of {gap:+.1f}%" in text  # the sentence states the measured figures, not a fixed verdict
    assert ("within" if abs(gap) <= 10 else "outside") + " the 10% goal" in text
    assert (tmp_path / "loss.png").stat().st_size > 0 and (tmp_path / "verify" / "report.md").exists()
