"""The README's examples run as printed and say what they claim."""

import pathlib
import re

import torch


def test_readme_examples_run_and_hold():
    src = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    tour, elbo, model = re.findall(r"```python\n(.*?)```", src, re.S)[:3]
    ns: dict = {}
    exec(compile(tour, "README.md", "exec"), ns)
    assert ns["out"].nfe == 12 and ns["out"].z.shape == (8, 6, 2)
    exact = ns["oracle"].log_marginal(ns["zc"], torch.full((2, 6), 0.2, dtype=torch.float64))
    assert (ns["lp"] - exact).abs().max() < 1e-4
    exec(compile(elbo, "README.md", "exec"), ns)
    nll = -ns["oracle"].log_prob(ns["x"])
    assert (ns["ar"].total - nll).abs().max() < 1e-10  # C7: exact along the AR staircase
    marg = ns["oracle"].token_marginals()
    assert torch.allclose(ns["one"].total, -marg[torch.arange(6), ns["x"]].log().sum(-1), atol=1e-6)  # C8
    assert ((ns["vdm"].total - nll).abs() < 4 * ns["vdm"].stderr + 1.0).all()  # C4/C6 at K = 224
    exec(compile(model, "README.md", "exec"), ns)
    assert ns["out"].logits.shape == (2, 16, ns["model"].config.vocab)
    assert (ns["full"].z - ns["fast"].z).abs().max() < 1e-5  # the frontier cache changes the cost, not the answer
