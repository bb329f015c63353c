"""The README's Python blocks each run on their own, in a fresh namespace, and print what their comments say."""

import contextlib
import io
import pathlib
import re

import torch

BLOCKS = re.findall(r"```python\n(.*?)```", (pathlib.Path(__file__).parents[1] / "README.md").read_text(), re.S)
NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def run(block: str) -> tuple[dict, list[str]]:
    """Execute one block alone; return its namespace and the lines it printed."""
    ns: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), ns)
    return ns, out.getvalue().splitlines()


def numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(NUMBER, line.split("tensor(")[-1].split("dtype")[0])]


def test_there_are_five_blocks():
    assert len(BLOCKS) == 5


def test_the_tour_prints_its_call_count_and_three_small_likelihood_errors():
    ns, printed = run(BLOCKS[0])
    assert printed[0] == "12 torch.Size([8, 6, 2])"  # "12 network calls, (8, 6, 2)"
    assert len(printed) == 4
    for line, path in zip(printed[1:], ["Staircase", "Synchronous", "Rolling"], strict=True):
        assert line.startswith(path) and max(abs(v) for v in numbers(line)) < 1e-4  # "~1e-6 on every path"
    exact = ns["oracle"].log_marginal(ns["zc"], torch.full((2, 6), 0.2, dtype=torch.float64))
    assert (ns["lp"] - exact).abs().max() < 1e-4


def test_the_elbo_block_is_exact_along_the_ar_path():
    ns, printed = run(BLOCKS[1])
    assert max(abs(v) for v in numbers(printed[0])) < 1e-12  # "0 up to 1e-15, for every x"
    nll = -ns["oracle"].log_prob(ns["x"])
    assert (ns["ar"].total - nll).abs().max() < 1e-10 and ns["ar"].stderr.isnan().all()  # C7, one sample
    marg = ns["oracle"].token_marginals()
    assert torch.allclose(ns["one"].total, -marg[torch.arange(6), ns["x"]].log().sum(-1), atol=1e-6)  # C8
    assert ((ns["vdm"].total - nll).abs() < 4 * ns["vdm"].stderr + 1.0).all()  # C4/C6 at K = 224
    assert torch.isfinite(ns["cont"].total).all()


def test_the_decoding_block_decodes_with_each_controller_and_prints_its_cost():
    ns, printed = run(BLOCKS[2])
    assert ns["ar"].nfe == 8 and ns["sync"].nfe == 4  # one call per token; four synchronous steps
    assert (ns["evo"].tokens[:, 0] == 2).all() and ns["evo"].generated == 7  # the prompt is kept, not counted
    assert printed[0].startswith("torch.Size([1000, 8]) ") and "calls/token" in printed[0]
    assert 0 < ns["evo"].calls_per_token <= 1.0


def test_the_model_block_runs_and_the_cache_changes_the_cost_not_the_answer():
    ns, _ = run(BLOCKS[3])
    assert ns["out"].logits.shape == (2, 16, ns["model"].config.vocab)
    assert (ns["full"].z - ns["fast"].z).abs().max() < 1e-5


def test_the_fsdp_block_runs_on_this_machine():
    _, printed = run(BLOCKS[4])
    expected = "8,056,243,201" if torch.cuda.is_available() else "134,465"
    assert printed == [f"{expected} parameters"]
