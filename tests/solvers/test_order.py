"""Every registered solver converges at its declared order on a problem with a known answer.

Deterministic solvers, in both directions: the exact log-likelihood ODE of claim C11 on a Markov
oracle, whose answer ``log p_tau(z)`` is closed-form, and sampling from the noise end to
t_min = 0.3 against scipy's flow map (tests/solvers/flow_reference.py; the clean end itself is
tests/solvers/test_clean_end.py); the fitted log-log slope of the error against the step size
must be within 0.3 of ``solver.order``. torchdiffeq's Adams methods, which the adapter runs in one
``odeint`` so that they keep their history, are variable-order (4 and up) and must reach at least 4.
Adaptive methods are run with fixed steps (huge tolerances, ``first_step = max_step = h``) so their
propagated order is what is measured; a separate test checks that their tolerance controls the error.
Stochastic solvers: weak order, through the second moments of the samples against their closed form.
"""

import functools

import numpy as np
import pytest
import torch

import evoflow as ef
from evoflow.process import q_sample
from tests.solvers.flow_reference import flow_map, separated_oracle
from tests.strategies import random_markov

F64 = torch.float64
T_MIN = 0.3
STEPS = {1: [16, 32, 64], 2: [16, 32, 64], 3: [16, 32, 64], 4: [16, 32, 64], 5: [16, 32, 64]}


def _problem(schedule, seed=3):
    oracle = random_markov(3, 2, 1, schedule, seed=seed)
    g = torch.Generator().manual_seed(0)
    tau = torch.full((3, 2), T_MIN, dtype=F64)
    z = q_sample(oracle.sample(3, generator=g), tau, oracle.embeddings, schedule, g)
    return oracle, z, oracle.log_marginal(z, tau)


@functools.cache
def _sampling_problem(schedule, path):
    oracle = separated_oracle(schedule, side=1.4)
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    return oracle, z, flow_map(oracle, z, path, T_MIN, rtol=1e-13)


def _fixed_step(name, K):
    """The solver and grid steps that make K steps of size 1/K along the synchronous path."""
    solver = ef.solvers.get(name)
    if not solver.adaptive:
        return solver, K
    return ef.solvers.get(name, rtol=1e9, atol=1e9, options={"first_step": 1 / K, "max_step": 1 / K}), 1


def _slope(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("schedule", [ef.Cosine(), ef.Linear()], ids=repr)
@pytest.mark.parametrize("name", [n for n in ef.solvers.names() if ef.solvers.get(n).kind == "ode"])
def test_deterministic_solvers_converge_at_their_declared_order(name, schedule):
    oracle, z, exact = _problem(schedule)
    order = ef.solvers.get(name).order
    Ks = STEPS.get(order, [4, 8, 16])
    errors = []
    for K in Ks:
        solver, steps = _fixed_step(name, K)
        got = ef.log_likelihood(oracle, z, ef.Synchronous(), steps, solver=solver, t_min=T_MIN)
        errors.append(float((got - exact).abs().max()))
    assert errors[-1] < errors[0]
    assert abs(_slope(Ks, errors) - order) < 0.3, (errors, _slope(Ks, errors))


@pytest.mark.parametrize(("schedule", "path", "base"), [(ef.Cosine(), ef.Synchronous(), 1),
                                                     (ef.Linear(), ef.Synchronous(), 1),
                                                     (ef.Cosine(), ef.Rolling(2.0), 4)], ids=repr)
@pytest.mark.parametrize("name", [n for n in ef.solvers.names() if ef.solvers.get(n).kind == "ode"])
def test_sampling_converges_at_the_declared_order(name, schedule, path, base):
    """Noise end -> t_min = 0.3: no step is stiff, so the clean-end mechanism leaves every step alone.

    At these step counts some methods still converge faster than their asymptotic order (DPM-Solver++
    on the linear schedule, fixed-step dopri5), hence the band [order - 0.3, order + 0.6]."""
    oracle, z, exact = _sampling_problem(schedule, path)
    order = ef.solvers.get(name).order
    Ks = [16, 32, 64]
    errors = []
    for K in Ks:
        solver, steps = _fixed_step(name, K)
        got = ef.solve(oracle, z, path, steps * base, solver=solver, t_min=T_MIN).z
        errors.append(float((got - exact).abs().max()))
    assert errors[-1] < errors[0]
    assert order - 0.3 < _slope(Ks, errors) < order + 0.6, (errors, _slope(Ks, errors))


@pytest.mark.parametrize("schedule", [ef.Cosine(), ef.Linear()], ids=repr)
@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_adams_methods_keep_their_history_and_reach_order_four(method, schedule):
    oracle, z, exact = _problem(schedule)
    Ks, errors, calls = [128, 256, 512], [], []
    for K in Ks:
        res = ef.flow_log_likelihood(oracle, z, ef.Synchronous(), K, solver=f"torchdiffeq:{method}", t_min=T_MIN)
        errors.append(float((res.log_prob - exact).abs().max()))
        calls.append(res.nfe)
    assert _slope(Ks, errors) > 4 - 0.3, errors
    if method == "explicit_adams":  # one call per step once the history is there (2 RK4 steps start it)
        assert calls == [(K - 2) + 2 * 4 for K in Ks]


@pytest.mark.parametrize("name", [n for n in ef.solvers.names() if ef.solvers.get(n).adaptive])
def test_adaptive_tolerance_controls_the_error(name):
    oracle, z, exact = _problem(ef.Cosine())
    errors, calls = [], []
    for tol in (1e-4, 1e-6, 1e-8):
        solver = ef.solvers.get(name, rtol=tol, atol=tol)
        res = ef.flow_log_likelihood(oracle, z, ef.Synchronous(), 1, solver=solver, t_min=T_MIN)
        errors.append(float((res.log_prob - exact).abs().max()))
        calls.append(res.nfe)
        assert errors[-1] < 100 * tol
    assert errors[0] > errors[1] > errors[2] and calls[0] < calls[1] < calls[2]


@pytest.mark.parametrize("name", [n for n in ef.solvers.names() if ef.solvers.get(n).kind == "sde"])
def test_stochastic_solvers_converge_weakly_at_their_declared_order(name):
    """Second moments E[z_i z_j] at t_min after sampling from the prior, against the closed form
    ``alpha^2 E[e_xi e_xj] + sigma^2 [i = j]``; 200k samples make the Monte-Carlo error ~3e-3."""
    sch = ef.Linear()
    init = torch.tensor([0.3, 0.7], dtype=F64)
    A = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=F64)
    E = torch.tensor([[-1.0], [1.5]], dtype=F64)
    oracle = ef.MarkovOracle(init, A, E, sch, length=2)
    joint = init[:, None] * A  # p(x_1, x_2)
    a, s = float(sch.alpha(torch.tensor(T_MIN))), float(sch.sigma(torch.tensor(T_MIN)))
    e = E[:, 0]
    exact = torch.stack([a**2 * (joint.sum(1) * e**2).sum() + s**2, a**2 * (joint.sum(0) * e**2).sum() + s**2,
                         a**2 * (joint * e[:, None] * e[None, :]).sum()])
    solver = ef.solvers.get(name)
    g = torch.Generator().manual_seed(0)
    Ks, errors = [2, 4, 8, 16], []
    for K in Ks:
        z = torch.randn(200_000, 2, 1, generator=g, dtype=F64)
        zz = ef.solve(oracle, z, ef.Synchronous(), K, solver=solver, t_min=T_MIN, generator=g).z[..., 0]
        moments = torch.stack([(zz[:, 0] ** 2).mean(), (zz[:, 1] ** 2).mean(), (zz[:, 0] * zz[:, 1]).mean()])
        errors.append(float((moments - exact).abs().max()))
    assert abs(_slope(Ks, errors) - solver.order) < 0.3, errors
