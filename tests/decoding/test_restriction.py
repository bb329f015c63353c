"""Decoding computes the field and the uncertainties only where a step reads them, and that changes no token (C14).

Reference runs switch the restriction off (``integrate(..., restrict=False)``, the Evo uncertainty over all L
positions) and must give the same tokens and time history under the same seed.
"""

import importlib

import pytest
import torch

import evoflow as ef
from evoflow.decoding import EvoController
from evoflow.decoding.controllers import _EvoRun, uncertainty_of, window_index, window_uncertainty
from evoflow.field import Field
from tests.strategies import random_markov

F64 = torch.float64
gen = importlib.import_module("evoflow.decoding.generate")  # the module (the package exports the function)


def _unrestricted(m: pytest.MonkeyPatch) -> None:
    """Switch both restrictions off: every evaluation's ehat and u over all columns, Evo's u at every position."""
    inner = gen.integrate
    m.setattr(gen, "integrate", lambda *a, **k: inner(*a, **{**k, "restrict": False}))
    m.setattr(_EvoRun, "_uncertainty", lambda self, out, open_: uncertainty_of(self.cfg.uncertainty, out.logits,
                                                                                 out.time))


@pytest.fixture
def spans(monkeypatch):
    """The column spans (lo, hi) for which any Field computed ehat and u, with the sequence length."""
    seen = []
    inner = Field.ehat_and_u

    def spy(self, z, tau, out, span):
        seen.append((span, z.shape[1]))
        return inner(self, z, tau, out, span)

    monkeypatch.setattr(Field, "ehat_and_u", spy)
    return seen


def _tiny():
    from evoflow.nn import CachedDenoiser, EvoTransformer, get_config

    torch.manual_seed(0)
    return CachedDenoiser(EvoTransformer(get_config("tiny")).double().eval())


EVO = EvoController(window=3, min_step=0.2, max_step=0.9, kappa=1.0, commit_threshold=0.3)
# no commit leads the moves: the leftmost moving token of a call is one the solver moves
DRIFT = EvoController(window=4, min_step=0.15, max_step=0.5, kappa=1.0, commit_threshold=None, min_commits=0,
                      frontier=False)
CONTROLLERS = {"evo": EVO, "evo-drift": DRIFT, "rolling": ef.Rolling(2.0)}


def _decode(denoiser, solver, controller=EVO, length=10):
    prompts = torch.tensor([[3, 4], [4, 1], [3, 4], [0, 2]])
    return ef.generate(denoiser, length, controller, batch=4, prompt=prompts, solver=solver,
                       generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("controller", list(CONTROLLERS))
@pytest.mark.parametrize("solver", [None, "ddim", "ddim-ancestral", "dpm++2m", "heun"])
def test_restricting_the_computation_to_the_moving_columns_changes_no_token(solver, controller, spans):
    """A float64 Transformer through the frontier cache (truncated calls): same seed, same tokens and times."""
    restricted = _decode(_tiny(), solver, CONTROLLERS[controller])
    if solver is None:  # the token sampler reads the logits only: no ehat, no velocity at all
        assert spans == []
    else:  # computed over fewer columns than the sequence at some call: the restriction is not vacuous
        assert spans and min(hi - lo for (lo, hi), _ in spans) < 8 and all(L == 10 for _, L in spans)
    with pytest.MonkeyPatch.context() as m:
        _unrestricted(m)
        full = _decode(_tiny(), solver, CONTROLLERS[controller])
    assert restricted.nfe == full.nfe and torch.equal(restricted.tokens, full.tokens)
    torch.testing.assert_close(restricted.times, full.times, rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", [None, "ddim"])
def test_on_an_oracle_the_restricted_evo_run_equals_the_full_one(solver):
    """An oracle hides nothing (every call covers L) and its window is narrower than L: the same tokens."""
    oracle = random_markov(5, 9, 3, ef.get_schedule("cosine"), seed=3)
    evo = EvoController(window=4, min_step=0.1, kappa=2.0, commit_threshold=0.6, uncertainty="maxprob")
    restricted = _decode(oracle, solver, evo, length=9)
    with pytest.MonkeyPatch.context() as m:
        _unrestricted(m)
        full = _decode(oracle, solver, evo, length=9)
    assert torch.equal(restricted.tokens, full.tokens) and restricted.nfe == full.nfe
    torch.testing.assert_close(restricted.times, full.times, rtol=0, atol=1e-12)


def test_window_index_finds_the_first_open_tokens_of_every_row():
    g = torch.Generator().manual_seed(0)
    open_ = torch.rand(6, 11, generator=g) < 0.5
    open_[0] = False  # a finished row
    open_[1] = True
    idx = window_index(open_, 4)
    for b in range(6):
        first = [i for i in range(11) if open_[b, i]][:4]
        assert idx[b].tolist() == first + [11] * (4 - len(first))
    assert window_index(open_, 20).shape == (6, 11)  # never wider than the sequence


@pytest.mark.parametrize("kind", ["entropy", "maxprob", "time_head"])
def test_window_uncertainty_equals_the_full_uncertainty_inside_the_window(kind):
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(5, 12, 7, generator=g, dtype=F64)
    time = torch.rand(5, 12, generator=g, dtype=F64)
    open_ = torch.rand(5, 12, generator=g) < 0.6
    out = ef.DenoiserOutput(logits=logits, time=time)
    u, top = window_uncertainty(kind, out, open_, 3)
    full_u, full_top = uncertainty_of(kind, logits, time)
    active = open_ & (open_.long().cumsum(-1) <= 3)
    assert int(active.sum()) > 5 and bool((open_ & ~active).any())  # the window leaves open tokens out
    torch.testing.assert_close(u[active], full_u[active], rtol=0, atol=1e-15)
    torch.testing.assert_close(top[active], full_top[active], rtol=0, atol=1e-15)
    assert bool((u[~active] == 1).all()) and bool((top[~active] == 0).all())
