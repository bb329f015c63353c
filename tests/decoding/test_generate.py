"""evoflow.generate on exact oracles and a tiny Transformer: sample laws, C14 limits, costs, batches, bad input."""

import pytest
import torch
from scipy.stats import chisquare

import evoflow as ef
from evoflow.decoding import EvoController
from tests.strategies import random_markov, random_table

F64 = torch.float64
N = 6000


@pytest.fixture(scope="module")
def table():
    """V = 3, L = 3 with arbitrary correlations (cosine: alpha(1) = 0)."""
    return random_table(3, 3, 2, ef.get_schedule("cosine"), seed=3)


def _counts(tokens: torch.Tensor, V: int) -> torch.Tensor:
    index = (tokens * V ** torch.arange(tokens.shape[1] - 1, -1, -1)).sum(-1)
    return torch.bincount(index, minlength=V ** tokens.shape[1]).to(F64)


def _pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs.flatten() * counts.sum()
    return float(chisquare(counts.numpy(), expected.numpy()).pvalue)


def _product_of_marginals(probs: torch.Tensor) -> torch.Tensor:
    m = [probs.sum(dim=tuple(j for j in range(probs.ndim) if j != i)) for i in range(probs.ndim)]
    return torch.einsum("a,b,c->abc", *m)


def test_ar_decoding_samples_p_x_and_one_synchronous_step_the_product_of_marginals(table):
    """C14 / C7: chi-square at N = 6000 over all 27 sequences; each law is also shown to reject the other."""
    g = torch.Generator().manual_seed(0)
    ar = ef.generate(table, 3, ef.Staircase(1), batch=N, generator=g)
    sync = ef.generate(table, 3, ef.Synchronous(), steps=1, batch=N, generator=g)
    assert ar.nfe == 3 and sync.nfe == 1
    joint, product = table.probs, _product_of_marginals(table.probs)
    assert _pvalue(_counts(ar.tokens, 3), joint) > 1e-3
    assert _pvalue(_counts(sync.tokens, 3), product) > 1e-3
    assert _pvalue(_counts(ar.tokens, 3), product) < 1e-6  # the data are correlated: the test has power
    assert _pvalue(_counts(sync.tokens, 3), joint) < 1e-6


@pytest.mark.parametrize("solver", [None, "ddim"])
def test_window_one_with_full_steps_is_ar_decoding_token_for_token(solver):
    """C14: the same seed gives the same tokens and the same time history as Staircase(1), one jump per token."""
    oracle = random_markov(4, 6, 2, ef.get_schedule("cosine"), seed=1)
    evo = EvoController(window=1, min_step=1.0, max_step=1.0, commit_threshold=None)
    a = ef.generate(oracle, 6, ef.Staircase(1), batch=16, solver=solver, generator=torch.Generator().manual_seed(5))
    b = ef.generate(oracle, 6, evo, batch=16, solver=solver, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.times, b.times) and a.nfe == b.nfe == 6


@pytest.mark.parametrize("solver", [None, "ddim"])
def test_window_l_with_steps_of_one_over_k_is_synchronous_k_step_decoding(solver):
    oracle = random_markov(4, 6, 2, ef.get_schedule("cosine"), seed=2)
    K = 5
    evo = EvoController(window=6, min_step=1 / K, max_step=1 / K, commit_threshold=None, min_commits=0)
    a = ef.generate(oracle, 6, ef.Synchronous(), steps=K, batch=16, solver=solver,
                    generator=torch.Generator().manual_seed(5))
    b = ef.generate(oracle, 6, evo, batch=16, solver=solver, generator=torch.Generator().manual_seed(5))
    assert a.nfe == b.nfe == K
    torch.testing.assert_close(a.times, b.times, rtol=0, atol=1e-12)
    assert torch.equal(a.tokens, b.tokens)


def test_the_time_history_is_monotone_commits_are_exact_and_progress_is_guaranteed():
    oracle = random_markov(5, 8, 3, ef.get_schedule("cosine"), seed=4)
    evo = EvoController(window=4, min_step=0.05, max_step=0.5, commit_threshold=0.95)
    r = ef.generate(oracle, 8, evo, batch=6, generator=torch.Generator().manual_seed(0))
    assert r.times.shape == (r.nfe + 1, 6, 8)
    assert bool((r.times[1:] <= r.times[:-1]).all()) and bool((r.times[-1] == 0).all())
    opened = (r.times[:-1] > 0).sum(-1)  # open tokens before each call, per sequence
    after = (r.times[1:] > 0).sum(-1)
    assert bool(((opened - after >= 1) | (opened == 0)).all())  # at least one commit per call while open
    assert bool((torch.diff(r.times, dim=-1) >= 0).all())  # the frontier: t_i <= t_{i+1}


class _Counter:
    """A denoiser wrapper that counts its calls and, per sequence, the calls with a token still open."""

    def __init__(self, inner):
        self.inner, self.schedule, self.embeddings = inner, inner.schedule, inner.embeddings
        self.calls, self.rows = 0, None

    def __call__(self, z, tau):
        self.calls += 1
        open_ = (tau > 0).any(-1).long()
        self.rows = open_ if self.rows is None else self.rows + open_
        return self.inner(z, tau)


def test_cost_accounting_equals_the_calls_a_wrapper_counts_and_excludes_the_prompt():
    oracle = random_markov(5, 8, 3, ef.get_schedule("cosine"), seed=6)
    counted = _Counter(oracle)
    evo = EvoController(window=8, min_step=0.1, max_step=1.0, kappa=1.0, commit_threshold=0.6)
    r = ef.generate(counted, 8, evo, batch=5, prompt=[1, 2], generator=torch.Generator().manual_seed(1))
    assert r.nfe == counted.calls
    assert torch.equal(r.calls_per_sequence, counted.rows)
    assert int(r.calls_per_sequence.min()) < int(r.calls_per_sequence.max())  # not charged for the slowest
    assert r.generated == 6 and torch.equal(r.tokens[:, :2], torch.tensor([[1, 2]] * 5))
    assert r.calls_per_token == pytest.approx(float(counted.rows.sum()) / 30)
    assert r.tokens_per_call == pytest.approx(1 / r.calls_per_token)
    assert bool((r.times[:, :, :2] == 0).all())


@pytest.mark.parametrize("min_move", [0.0, 0.2])
def test_min_move_leaves_a_token_whose_step_is_shorter_where_it_is(min_move):
    """Without the frontier (which may shorten a step to a neighbour's time), every step of a token that does not
    commit is 0 or at least min_move; with min_move = 0 the same decoding takes shorter steps (the test has power)."""
    oracle = random_markov(6, 8, 3, ef.get_schedule("cosine"), seed=11)
    evo = EvoController(window=8, min_step=0.0, kappa=1.0, frontier=False, commit_threshold=0.9, min_move=min_move)
    r = ef.generate(oracle, 8, evo, batch=32, generator=torch.Generator().manual_seed(3))
    step = r.times[:-1] - r.times[1:]  # (calls, B, L) how far each token moved at each call
    moved = (step > 0) & (r.times[1:] > 0)  # moved without committing
    short = moved & (step < 0.2)
    assert int(moved.sum()) > 20
    assert bool(short.any()) if min_move == 0 else not bool(short.any())
    assert bool((r.times[-1] == 0).all())


def test_min_move_keeps_an_uncertain_window_at_pure_noise_and_equals_the_block_path():
    """With min_move above every uncertain token's step and min_commits = window, each call commits the next
    window from t = 1: the staircase with one jump per block, token for token under the same seed."""
    oracle = random_markov(6, 8, 3, ef.get_schedule("cosine"), seed=12, sharp=0.5)  # flat: no token is confident
    evo = EvoController(window=4, kappa=4.0, min_commits=2, commit_threshold=None, min_move=0.5)
    a = ef.generate(oracle, 8, evo, batch=16, generator=torch.Generator().manual_seed(4))
    b = ef.generate(oracle, 8, ef.Staircase(2), steps=4, batch=16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.times, b.times) and a.nfe == b.nfe == 4
    no_floor = EvoController(window=4, kappa=4.0, min_commits=2, commit_threshold=None, min_move=0.0)
    drift = ef.generate(oracle, 8, no_floor, batch=16, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(drift.times, b.times)  # without min_move the window drifts off t = 1


def test_max_calls_caps_every_sequence():
    oracle = random_markov(5, 10, 3, ef.get_schedule("cosine"), seed=6)
    evo = EvoController(window=2, min_step=0.1, max_step=0.2, commit_threshold=None, min_commits=0, max_calls=4)
    r = ef.generate(oracle, 10, evo, batch=3, generator=torch.Generator().manual_seed(1))
    assert r.nfe == 4 and int(r.calls_per_sequence.max()) == 4


@pytest.mark.parametrize("controller", [ef.Staircase(2), ef.Rolling(2.0), EvoController(window=4, min_step=0.2)])
def test_argmax_decoding_does_not_depend_on_the_batch_or_the_seed(controller):
    oracle = random_markov(5, 8, 3, ef.get_schedule("cosine"), seed=8)
    prompts = torch.tensor([[0], [1], [2], [3], [4], [0], [2], [1]])
    steps = {ef.Staircase: 8, ef.Rolling: None}.get(type(controller))
    both = ef.generate(oracle, 8, controller, steps=steps, batch=8, prompt=prompts, temperature=0,
                       generator=torch.Generator().manual_seed(0))
    for b in (0, 3, 7):
        alone = ef.generate(oracle, 8, controller, steps=steps, prompt=prompts[b], temperature=0,
                            generator=torch.Generator().manual_seed(b + 11))
        assert torch.equal(alone.tokens[0], both.tokens[b])
        assert int(alone.calls_per_sequence[0]) == int(both.calls_per_sequence[b])


def test_a_transformer_decodes_batch_invariantly_and_the_frontier_cache_changes_nothing():
    from evoflow.nn import CachedDenoiser, EvoTransformer, get_config

    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny")).eval()
    evo = EvoController(window=4, min_step=0.3, commit_threshold=0.5)
    prompts = torch.randint(0, 64, (8, 3), generator=torch.Generator().manual_seed(1))
    full = ef.generate(model, 12, evo, batch=8, prompt=prompts, temperature=0)
    alone = ef.generate(model, 12, evo, prompt=prompts[5], temperature=0)
    assert torch.equal(alone.tokens[0], full.tokens[5])
    cached = ef.generate(CachedDenoiser(model), 12, ef.Staircase(1), batch=8, prompt=prompts, temperature=0)
    plain = ef.generate(model, 12, ef.Staircase(1), batch=8, prompt=prompts, temperature=0)
    assert torch.equal(cached.tokens, plain.tokens) and cached.cache_hits > 0 and plain.cache_hits == 0


def test_temperature_and_top_p_change_the_commits_as_stated(table):
    g = torch.Generator().manual_seed(0)
    greedy = ef.generate(table, 3, ef.Staircase(1), batch=4, temperature=0, generator=g)
    assert bool((greedy.tokens == greedy.tokens[0]).all())  # deterministic
    first = table.probs.sum(dim=(1, 2))
    nucleus = ef.generate(table, 3, ef.Staircase(1), batch=500, top_p=1e-9, generator=g)
    assert bool((nucleus.tokens[:, 0] == int(first.argmax())).all())  # top-p -> 0 keeps only the top token


@pytest.mark.parametrize("kwargs, match", [
    ({"length": 0}, "length"), ({"length": 3, "prompt": [0, 1, 2]}, "prompt"), ({"batch": 0}, "batch"),
    ({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"steps": 0}, "steps"), ({"prompt": [0, 7]}, "prompt"), ({"controller": "ar"}, "controller"),
    ({"controller": EvoController(), "steps": 4}, "steps"),
])
def test_bad_input_is_refused_naming_the_argument(table, kwargs, match):
    args = {"length": 3, "controller": ef.Staircase(1), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        ef.generate(table, args.pop("length"), args.pop("controller"), **args)


@pytest.mark.parametrize("kwargs, match", [
    ({"window": 0}, "window"), ({"min_step": -0.1}, "min_step"), ({"max_step": 0.0}, "max_step"),
    ({"min_step": 0.6, "max_step": 0.5}, "min_step"), ({"kappa": 0.0}, "kappa"),
    ({"uncertainty": "variance"}, "uncertainty"), ({"commit_threshold": 1.5}, "commit_threshold"),
    ({"max_calls": 0}, "max_calls"), ({"min_step": 0.0, "min_commits": 0}, "min_step"),
    ({"frontier": 1}, "frontier"), ({"min_move": -0.1}, "min_move"), ({"min_move": 1.5}, "min_move"),
    ({"min_step": 0.1, "min_move": 0.2, "min_commits": 0}, "min_step"),
])
def test_bad_controller_settings_are_refused_naming_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        EvoController(**kwargs)


class _Opaque:
    """The same model without ``hides_noise``: every call covers the whole sequence."""

    def __init__(self, model):
        self.model, self.schedule, self.embeddings = model, model.schedule, model.embeddings

    def __call__(self, z, tau):
        return self.model(z, tau)


@pytest.mark.parametrize("controller, steps", [(ef.Staircase(1), None), (ef.Rolling(2.0), None),
                                               (EvoController(window=3, min_step=0.3), None)])
def test_leaving_out_the_pure_noise_suffix_changes_nothing(controller, steps):
    """Under Frontier the outputs do not depend on tokens at t = 1 (C13): float64, same seed, same tokens."""
    from evoflow.nn import EvoTransformer, get_config

    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny")).double().eval()
    args = dict(batch=4, prompt=[3, 4], steps=steps)
    short = ef.generate(model, 10, controller, generator=torch.Generator().manual_seed(2), **args)
    whole = ef.generate(_Opaque(model), 10, controller, generator=torch.Generator().manual_seed(2), **args)
    assert torch.equal(short.tokens, whole.tokens) and short.nfe == whole.nfe
    torch.testing.assert_close(short.times, whole.times, rtol=0, atol=1e-10)  # Evo's steps: float64 rounding


def test_ar_decoding_with_the_cache_computes_two_positions_per_call():
    from evoflow.nn import CachedDenoiser, EvoTransformer, get_config

    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny")).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    r = ef.generate(CachedDenoiser(model), 12, ef.Staircase(1), batch=2, prompt=[1, 2])
    # the prompt and the first new token, then per call the token just committed (its keys at t = 0 are new)
    # and the next one: O(1) positions per call, however long the prefix
    assert r.nfe == 10 and seen == [3] + [2] * 9
    assert r.cache_hits == 2 * sum(range(2, 11))  # rows x cached prefix at each call after the first


def test_a_shifted_model_decodes_ar_with_one_position_per_call():
    """With ``shift`` the token about to be drawn reads the state before it (``ahead=1``), so cached AR decoding
    computes only the token just committed, and draws the same tokens as the uncached full computation."""
    from evoflow.nn import CachedDenoiser, EvoTransformer, get_config

    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny", shift=True)).eval()
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    r = ef.generate(CachedDenoiser(model), 12, ef.Staircase(1), batch=2, prompt=[1, 2],
                    generator=torch.Generator().manual_seed(4))
    hook.remove()
    assert r.nfe == 10 and seen == [2] + [1] * 9  # the prompt, then one position per call
    full = ef.generate(_Plain(model), 12, ef.Staircase(1), batch=2, prompt=[1, 2],
                       generator=torch.Generator().manual_seed(4))
    assert torch.equal(r.tokens, full.tokens)


class _Plain:
    """A model seen through the bare denoiser interface (no cache, no truncation): every call computes all."""

    def __init__(self, model):
        self.model, self.schedule, self.embeddings = model, model.schedule, model.embeddings

    def __call__(self, z, tau):
        return self.model(z, tau)
