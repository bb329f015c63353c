"""Claim C9: the continuous-time NELBO estimators are unbiased over paths and samplers of s.

The reference is a quadrature written independently here: Gauss-Legendre in s on every smooth
piece of each path (between knots) times Gauss-Hermite over z ~ q(z | x, tau(s)) (L d = 2).
"""

import itertools
import math

import numpy as np
import pytest
import torch

import evoflow as ef
from evoflow.elbo import fit_log_snr_profile
from evoflow.estimators import LogSNRImportance, PathDistribution
from evoflow.process import posterior_mean
from tests.strategies import random_markov

F64 = torch.float64
T_MIN = 0.2
PATHS = [ef.Synchronous(), ef.Staircase(1), ef.Rolling(1.5)]
WEIGHTS = [0.5, 0.3, 0.2]
SAMPLERS = {
    "uniform": ef.Uniform(), "antithetic": ef.Antithetic(), "stratified": ef.Stratified(),
    "logsnr": LogSNRImportance(), "logsnr+stratified": LogSNRImportance(ef.Stratified()),
}


def quadrature(oracle, x, path, n_s=40, n_gh=40):
    """int_0^1 sum_i 1/2 (-SNR') (-dt_i/ds) E_z ||e_{x_i} - ehat_i||^2 ds for one sequence x (L,), d = 1."""
    sch, E, L = oracle.schedule, oracle.embeddings, x.shape[0]
    gl, glw = np.polynomial.legendre.leggauss(n_s)
    gh, ghw = np.polynomial.hermite_e.hermegauss(n_gh)
    xi = torch.tensor(np.stack(np.meshgrid(gh, gh, indexing="ij"), -1).reshape(-1, 2, 1))  # (G, L, 1)
    wz = torch.tensor(np.outer(ghw, ghw).reshape(-1)) / (2 * math.pi)
    ends = [0.0, *path.knots(L).tolist(), 1.0]
    total = 0.0
    for a, b in itertools.pairwise(ends):
        s = torch.tensor(a + (b - a) * (gl + 1) / 2)
        tau = T_MIN + (1 - T_MIN) * path.tau(s, L)  # (S, L)
        dtau = (1 - T_MIN) * path.dtau(s, L)
        z = sch.alpha(tau)[:, None, :, None] * E[x][None, None] + sch.sigma(tau)[:, None, :, None] * xi[None]
        taus = tau[:, None, :].expand(-1, len(wz), -1)
        ehat = posterior_mean(oracle(z.reshape(-1, L, 1), taus.reshape(-1, L)).logits, E).reshape(z.shape)
        sq = ((E[x][None, None] - ehat) ** 2).sum(-1)  # (S, G, L)
        inner = (sq * wz[None, :, None]).sum(1)  # E_z, (S, L)
        f = (0.5 * sch.dsnr(tau) * dtau * inner).sum(-1)
        total += float((b - a) / 2 * (torch.tensor(glw) * f).sum())
    return total


@pytest.fixture(scope="module")
def problem():
    oracle = random_markov(3, 2, 1, ef.Cosine(), seed=5)
    x = torch.tensor([[2, 0]])
    reference = sum(w * quadrature(oracle, x[0], p) for w, p in zip(WEIGHTS, PATHS, strict=True))
    return oracle, x, reference


def test_quadrature_reference_is_converged(problem):
    oracle, x, reference = problem
    finer = sum(w * quadrature(oracle, x[0], p, n_s=64, n_gh=60) for w, p in zip(WEIGHTS, PATHS, strict=True))
    assert abs(finer - reference) < 1e-4 * max(1.0, abs(reference))


@pytest.fixture(scope="module")
def variances(problem):
    oracle, x, _ = problem
    dist = PathDistribution(PATHS, WEIGHTS)
    fitted = fit_log_snr_profile(oracle, x.repeat(4, 1), dist, T_MIN, calls=256,
                                 generator=torch.Generator().manual_seed(9))  # pilot, independent of the test
    samplers = {**SAMPLERS, "logsnr-fitted": fitted}
    return ef.elbo.estimator_variance(oracle, x, dist, samplers, calls=16, replications=400, t_min=T_MIN,
                                      generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", [*SAMPLERS, "logsnr-fitted"])
def test_c9_estimators_are_unbiased(name, problem, variances):
    _, _, reference = problem
    mean, var_per_call = variances[name]
    se = math.sqrt(float(var_per_call[0]) / (16 * 400))
    assert abs(float(mean[0]) - reference) < 4 * se, (float(mean[0]), reference, se)


def test_c9_fitted_importance_cuts_the_variance_per_call(variances):
    """The variance-optimal (fitted) logSNR proposal beats plain uniform sampling of s clearly; the
    figures for every sampler are in bench/RESULTS.md (bench/bench_estimators.py)."""
    base = float(variances["uniform"][1][0])
    assert base / float(variances["logsnr-fitted"][1][0]) > 2.5


def test_importance_density_integrates_to_one_and_inverts_its_cdf():
    imp = LogSNRImportance(floor=0.2)
    for path in PATHS:
        s = torch.linspace(0, 1, 20001, dtype=F64)
        r = imp.density(s, path, 3, ef.Cosine(), 0.05)
        assert abs(float(torch.trapezoid(r, s)) - 1) < 1e-3
        _, w = imp.sample(1, 20000, path, 3, ef.Cosine(), 0.05, torch.Generator().manual_seed(0))
        assert abs(float(w.mean()) - 1) < 0.05  # E_r[1 / r] = 1 over [0, 1]


def test_estimator_arguments():
    oracle = random_markov(3, 2, 1, ef.Cosine(), seed=5)
    x = torch.tensor([[2, 0]])
    with pytest.raises(ValueError, match="even"):
        ef.continuous_nelbo(oracle, x, ef.Synchronous(), ef.Antithetic(), samples=3, t_min=0.1)
    with pytest.raises(TypeError, match="sampler"):
        ef.continuous_nelbo(oracle, x, ef.Synchronous(), "uniform", t_min=0.1)
    with pytest.raises(ValueError, match="t_min"):
        ef.continuous_nelbo(oracle, x, ef.Synchronous(), t_min=0.0)
    with pytest.raises(ValueError, match="floor"):
        LogSNRImportance(floor=0.0)
