"""The README's tour runs as printed and says what it claims."""

import pathlib
import re

import torch


def test_readme_tour_runs_and_paths_agree():
    src = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", src, re.S)[0]
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["out"].nfe == 12 and ns["out"].z.shape == (8, 6, 2)
    exact = ns["oracle"].log_marginal(ns["zc"], torch.full((2, 6), 0.2, dtype=torch.float64))
    assert (ns["lp"] - exact).abs().max() < 1e-4
