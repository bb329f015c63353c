"""The training objective (evoflow.train.objective, claim C9): unbiased for each path's NELBO against quadrature,
vectorised exactly, split across processes exactly, and the AR jump is the exact AR likelihood (C13)."""

import itertools
import math

import numpy as np
import pytest
import torch

import evoflow as ef
from evoflow.process import DenoiserOutput, posterior_mean
from evoflow.train.objective import (
    ARJump,
    GroupTime,
    Offsets,
    PathMixture,
    Rolling,
    Staircase,
    Synchronous,
    gaussian_decoder_nll,
    parse_mixture,
)
from tests.strategies import random_markov

F64 = torch.float64
T_MIN = 0.1


class OracleModel:
    """The exact posterior as a model, with the two-stream call done state by state (the reference)."""

    def __init__(self, oracle):
        self.oracle, self.schedule, self.embeddings = oracle, oracle.schedule, oracle.embeddings

    def __call__(self, z, tau):
        return DenoiserOutput(logits=self.oracle(z, tau).logits)

    def two_stream(self, x, z, tau, start):
        """Token i of row b scored in its own state (B, L states in one call): the tokens before its group clean,
        its group at its times, the rest at t = 1."""
        B, L = x.shape
        idx = torch.arange(L)
        s = start[:, :, None]  # (B, state i, position j)
        prefix, group = idx[None, None, :] < s, start[:, None, :] == s
        zz = torch.where(prefix[..., None], self.embeddings[x][:, None],
                         torch.where(group[..., None], z[:, None], 0.0))  # (B, L, L, d)
        tt = torch.where(prefix, 0.0, torch.where(group, tau[:, None, :], 1.0))
        logits = self.oracle(zz.reshape(B * L, L, -1), tt.reshape(B * L, L)).logits.reshape(B, L, L, -1)
        return DenoiserOutput(logits=logits[:, idx, idx])


@pytest.fixture(scope="module")
def problem():
    oracle = random_markov(3, 4, 2, ef.Linear(), seed=1, scale=1.5)
    x = oracle.sample(1, generator=torch.Generator().manual_seed(0))
    return OracleModel(oracle), x


def _mse(model, x, z, tau):
    """Per-token ||e_x - ehat||^2 (N, L) of one sequence in the single-stream states z (N, L, d) at times tau (L,)."""
    ehat = posterior_mean(model(z, tau.expand(z.shape[0], -1)).logits, model.embeddings)
    return ((model.embeddings[x] - ehat) ** 2).sum(-1)


def _gauss_legendre_log_t(f, a, b, n=48, pieces=6):
    """int_a^b f(t) dt by Gauss-Legendre in y = log t, on ``pieces`` equal pieces of [log a, log b] (f: arrays)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    total, edges = 0.0, np.linspace(math.log(a), math.log(b), pieces + 1)
    for lo, hi in itertools.pairwise(edges):
        for y, w in zip(0.5 * (hi - lo) * nodes + 0.5 * (hi + lo), 0.5 * (hi - lo) * weights, strict=True):
            total += w * math.exp(y) * f(math.exp(y))
    return total


def _group_target(model, x, groups, noise):
    """sum_groups int_{t_min}^1 1/2 (-SNR'(t)) D(t) dt for groups moving one at a time behind a clean prefix,
    one value per noise draw (their mean estimates the expectation over the noise)."""
    sch, L = model.schedule, x.shape[0]
    total = 0.0
    for g in groups:
        def f(t, g=g):
            tau = torch.where(torch.arange(L) < g[0], 0.0, torch.where(torch.isin(torch.arange(L), g), t, 1.0))
            z = model.embeddings[x] * sch.alpha(tau)[:, None] + sch.sigma(tau)[:, None] * noise  # (N, L, d)
            vals = _mse(model, x, z, tau)[:, g].sum(-1).numpy()
            return 0.5 * float(-sch.dsnr(torch.tensor(t, dtype=F64))) * vals
        total += _gauss_legendre_log_t(f, T_MIN, 1.0)
    return total


def _decoder_target(model, x):
    noise = torch.randn(20000, x.shape[1], 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    return float(gaussian_decoder_nll(x.expand(20000, -1), model.embeddings, model.schedule, T_MIN, noise).mean())


def _estimate(model, x, path, draws=768, seed=3):
    obj = PathMixture([(path, 1.0, 1.0)], t_min=T_MIN, time_weight=0.0)
    est = obj(model, x.expand(draws, -1), torch.Generator().manual_seed(seed))
    return float(est.bound.mean()), float(est.bound.std() / math.sqrt(draws))


@pytest.mark.parametrize(("path", "groups"), [(Synchronous(), [[0, 1, 2, 3]]), (Staircase(2), [[0, 1], [2, 3]]),
                                              (Staircase(1), [[0], [1], [2], [3]])], ids=repr)
def test_group_paths_are_unbiased_for_their_nelbo(problem, path, groups):
    """Mean of the estimator (independent times per group, importance weights) within 4 standard errors of
    Gauss-Legendre quadrature in t of the same path NELBO (the expectation over the noise by 24 common draws)."""
    model, x = problem
    noise = torch.randn(32, 4, 2, generator=torch.Generator().manual_seed(11), dtype=F64)
    per_draw = _group_target(model, x[0], [torch.tensor(g) for g in groups], noise)
    target, target_se = per_draw.mean() + _decoder_target(model, x), per_draw.std() / math.sqrt(len(per_draw))
    mean, se = _estimate(model, x, path)
    assert abs(mean - target) < 4 * math.hypot(se, target_se), (mean, se, target, target_se)
    assert se < 0.2 * abs(target)


def test_rolling_is_unbiased_for_its_nelbo(problem):
    """The systematic clock sample against midpoint quadrature over the clock p of the rolling path
    t_i(p) = G(clip((i + W - p) / W)), every state evaluated on its own (one stream)."""
    model, x = problem
    W, L, sch = 2, 4, model.schedule
    G = GroupTime(sch, T_MIN)
    noise = torch.randn(32, L, 2, generator=torch.Generator().manual_seed(11), dtype=F64)
    ps = (torch.arange(800, dtype=F64) + 0.5) / 800 * (L - 1 + W)
    total = np.zeros(len(noise))
    for p in ps:
        place = ((torch.arange(L, dtype=F64) + W - p) / W).clamp(0.0, 1.0)
        moving = (place > 0) & (place < 1)
        t, _ = G(place.clamp(max=1 - 1e-12))
        tau = torch.where(place <= 0, 0.0, torch.where(place >= 1, 1.0, t))
        eps = 1e-7  # -dt/dp = G'(place) / W, by a central difference of G (independent of the weights)
        dG = (G((place + eps).clamp(max=1 - 1e-12))[0] - G((place - eps).clamp(min=0.0))[0]) / (2 * eps)
        rate = torch.where(moving, 0.5 * (-sch.dsnr(tau)) * dG / W, 0.0)
        z = model.embeddings[x[0]] * sch.alpha(tau)[:, None] + sch.sigma(tau)[:, None] * noise
        total += (rate * _mse(model, x[0], z, tau)).sum(-1).numpy() * (L - 1 + W) / 800
    target, target_se = total.mean() + _decoder_target(model, x), total.std() / math.sqrt(len(total))
    mean, se = _estimate(model, x, Rolling(W))
    assert abs(mean - target) < 4 * math.hypot(se, target_se), (mean, se, target, target_se)


def test_offsets_is_the_average_of_its_paths(problem):
    """Independent per-token times (C9): the estimator against the ensemble's definition, an average over
    offsets o of each deterministic path's NELBO, each by midpoint quadrature over the clock."""
    model, x = problem
    M, L, sch = 1.0, 4, model.schedule
    G = GroupTime(sch, T_MIN)
    g = torch.Generator().manual_seed(5)
    per_path = []
    for _ in range(48):
        o = torch.rand(L, generator=g, dtype=F64) * M
        n = torch.randn(L, 2, generator=g, dtype=F64)
        total = 0.0
        for p in (torch.arange(120, dtype=F64) + 0.5) / 120 * (1 + M):
            place = 1.0 + o - p
            moving = (place > 0) & (place < 1)
            t, w = G(place.clamp(0.0, 1 - 1e-12))
            tau = torch.where(place <= 0, 0.0, torch.where(place >= 1, 1.0, t))
            z = model.embeddings[x[0]] * sch.alpha(tau)[:, None] + sch.sigma(tau)[:, None] * n
            total += float((torch.where(moving, w, 0.0) * _mse(model, x[0], z[None], tau)).sum()) * (1 + M) / 120
        per_path.append(total)
    target = float(np.mean(per_path)) + _decoder_target(model, x)
    target_se = float(np.std(per_path) / math.sqrt(len(per_path)))
    mean, se = _estimate(model, x, Offsets(M), draws=1536)
    assert abs(mean - target) < 4 * math.hypot(se, target_se), (mean, se, target, target_se)


def _transformer():
    from evoflow.nn import EvoTransformer, get_config

    torch.manual_seed(0)
    return EvoTransformer(get_config("tiny", layers=1)).double()


def test_the_ar_jump_is_the_exact_ar_likelihood():
    model = _transformer()
    x = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(1))
    est = PathMixture([(ARJump(), 1.0, 1.0)], time_weight=0.0)(model, x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(est.bound, -ef.ar_log_likelihood(model, x), rtol=1e-12, atol=1e-12)


def test_the_vectorised_staircase_scores_each_block_as_its_own_call():
    """One two-stream call per batch gives the per-token terms that scoring every block's state separately
    (prefix clean, the block at its time, the rest at t = 1) gives, with the same noise."""
    model, obj = _transformer(), PathMixture("stair=3", time_weight=0.0)
    x = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(2))
    lay = Staircase(3).layout(2, 7, GroupTime(model.schedule, obj.t_min), torch.Generator().manual_seed(4))
    noise, dec = torch.randn(2, 7, 16, dtype=F64), torch.randn(2, 7, 16, dtype=F64)
    got, _, _ = obj._score(model, x, lay, noise, dec, model.embeddings, model.schedule)
    E, sch = model.embeddings, model.schedule
    want = gaussian_decoder_nll(x, E, sch, obj.t_min, dec)
    for start in (0, 3, 6):
        group = (torch.arange(7) >= start) & (torch.arange(7) < start + 3)
        tau = torch.where(torch.arange(7) < start, 0.0, torch.where(group, lay.tau, 1.0))
        z = torch.where((torch.arange(7) < start)[:, None], E[x], sch.alpha(tau)[..., None] * E[x]
                        + sch.sigma(tau)[..., None] * noise)
        ehat = posterior_mean(model(z, tau).logits, E)
        want = want + (lay.weight * ((E[x] - ehat) ** 2).sum(-1) * group).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_processes_draw_the_global_batch_and_add_up():
    """world = 2 (each process its rows r::2): the same per-row bounds and the mean gradient of one process."""
    model = _transformer()
    obj = PathMixture("ar:1,stair=4:1,sync:1,rolling=3:1,offsets:1")
    x = torch.randint(0, 64, (10, 12), generator=torch.Generator().manual_seed(3))
    params = list(model.parameters())
    full = obj(model, x, torch.Generator().manual_seed(0))
    g_full = torch.autograd.grad(full.loss, params, allow_unused=True)
    parts = [obj(model, x[r::2], torch.Generator().manual_seed(0), rank=r, world=2) for r in range(2)]
    for r, part in enumerate(parts):
        torch.testing.assert_close(part.bound, full.bound[r::2], rtol=0, atol=0)
    grads = [torch.autograd.grad(p.loss, params, allow_unused=True) for p in parts]
    for a, b, c in zip(*grads, g_full, strict=True):
        if c is not None:
            torch.testing.assert_close((a + b) / 2, c, rtol=1e-10, atol=1e-12)


def test_shares_change_the_batch_not_the_bound():
    """Stratified shares of 16 rows: the mixture estimate is sum_j weight_j mean_j(bound) whatever the shares."""
    model = _transformer()
    x = torch.randint(0, 64, (16, 8), generator=torch.Generator().manual_seed(4))
    est = PathMixture("ar:0.75/0.25,sync:0.25/0.75", time_weight=0.0)(model, x, torch.Generator().manual_seed(1))
    comp = est.component
    assert int((comp == 0).sum()) == 4 and int((comp == 1).sum()) == 12
    want = 0.75 * est.bound[comp == 0].mean() + 0.25 * est.bound[comp == 1].mean()
    torch.testing.assert_close(est.mixture.mean(), want, rtol=1e-12, atol=1e-12)


def test_group_time_is_a_density_on_t_min_to_1():
    """G maps U[0, 1) onto [t_min, 1] increasingly, and the weights integrate 1/2 (-SNR') exactly: E_u[w] equals
    int_{t_min}^1 1/2 (-SNR'(t)) dt = (SNR(t_min) - SNR(1)) / 2."""
    for sch in (ef.Linear(), ef.Cosine()):
        G = GroupTime(sch, 0.05)
        u = (torch.arange(200000, dtype=F64) + 0.5) / 200000
        t, w = G(u)
        assert float(t[0]) >= 0.05 - 1e-12 and float(t[-1]) <= 1.0 and bool((t[1:] >= t[:-1]).all())
        exact = 0.5 * float(sch.snr(torch.tensor(0.05, dtype=F64)) - sch.snr(torch.tensor(1.0, dtype=F64)))
        assert abs(float(w.mean()) - exact) < 1e-3 * exact


def test_bad_mixtures_are_named():
    for text, match in [("beam", "unknown path"), ("ar:-1", "weight"), ("stair=x", "bad component"),
                        ("ar:0", "positive weight"), ("ar:1/0", "both zero")]:
        with pytest.raises(ValueError, match=match):
            parse_mixture(text)
    (path, w, share), = parse_mixture("rolling=3:2/5")
    assert isinstance(path, Rolling) and path.window == 3 and (w, share) == (2.0, 5.0)
    with pytest.raises(ValueError, match="surrogate"):
        PathMixture("ar", surrogate="l1")
