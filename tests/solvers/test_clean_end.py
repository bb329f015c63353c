"""Sampling all the way to the clean end with every registered ODE solver (evoflow.solvers.landing).

The exact flow map comes from scipy (tests/solvers/flow_reference.py), never from evoflow's solvers.
Every registered deterministic solver must converge to it from the noise end to t_min in
{0, 1e-9, 1e-5, 1e-3}, never blow up whatever the step count, and an adaptive method with one
grid step must reach the state it reaches with 32. A solver written outside the package inherits
all of it from Solver.step without knowing.
"""

import functools
import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import evoflow as ef
from evoflow.solvers import Solver, State
from evoflow.solvers.landing import LOG_SNR_FLOOR, STIFFNESS, regular_point, stiffness_rate
from tests.solvers.flow_reference import flow_map, separated_oracle, slope
from tests.strategies import random_markov, schedules

F64 = torch.float64
T_MINS = [0.0, 1e-9, 1e-5, 1e-3]
ODE = [n for n in ef.solvers.names() if ef.solvers.get(n).kind == "ode"]
FIXED = [n for n in ODE if not ef.solvers.get(n).adaptive]
ADAPTIVE = [n for n in ODE if ef.solvers.get(n).adaptive]


class NaiveRK2(Solver):
    """A third-party explicit midpoint written against the public contract only (advance)."""

    name, kind, order = "naive-rk2", "ode", 2

    def advance(self, field, state, t_from, t_to, generator):
        dt = (t_to - t_from)[..., None]
        k1 = field(state.z, t_from).u
        k2 = field(state.z + 0.5 * dt * k1, t_from + 0.5 * (t_to - t_from)).u
        return State(z=state.z + dt * k2)


def _solver(name):
    return NaiveRK2() if name == "naive-rk2" else ef.solvers.get(name)


@functools.cache
def _reference(schedule: str, path: str, t_min: float):
    sch = ef.get_schedule(schedule)
    oracle = separated_oracle(sch, side=1.4)
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    p = {"sync": ef.Synchronous(), "stair": ef.Staircase(1)}[path]
    return oracle, z, p, flow_map(oracle, z, p, t_min)


def _errors(name, schedule, path, t_min, Ks):
    oracle, z, p, ref = _reference(schedule, path, t_min)
    base = 1 if path == "sync" else 3
    return [float((ef.solve(oracle, z, p, base * K, solver=_solver(name), t_min=t_min).z - ref).abs().max())
            for K in Ks]


@pytest.mark.parametrize("t_min", T_MINS)
@pytest.mark.parametrize("name", [*FIXED, "naive-rk2"])
def test_sampling_converges_to_the_exact_flow_map_at_the_clean_end(name, t_min):
    """Synchronous, cosine: the error falls at least at first order as steps double (the O(sigma(t_min) h)
    term of the landing), to below a tenth of the noise left at t_min; coarse grids are measurably wrong."""
    Ks = [2, 4, 8, 16, 32, 64]
    errors = _errors(name, "cosine", "sync", t_min, Ks)
    assert errors[0] > 1e-3, errors  # two steps cannot be right: the test can tell convergence from luck
    noise = float(ef.Cosine().sigma(torch.tensor(t_min, dtype=F64)))
    assert errors[-1] < 0.1 * noise + 1e-11, errors
    for coarse, fine in itertools.pairwise(errors[2:]):
        assert fine <= 0.6 * coarse + 1e-12, errors


@pytest.mark.parametrize("t_min", [0.0, 1e-5])
@pytest.mark.parametrize("name", FIXED)
def test_staircase_sampling_lands_each_block_on_the_exact_flow_map(name, t_min):
    """Every block lands while the later ones wait at noise; each landing is split (C2 along a staircase)."""
    errors = _errors(name, "cosine", "stair", t_min, [4, 16, 64])
    noise = float(ef.Cosine().sigma(torch.tensor(t_min, dtype=F64)))
    assert errors[-1] < 0.1 * noise + 1e-11 and errors[-1] < errors[0] / 4, errors


@pytest.mark.parametrize("name", ["rk4", "heun", "midpoint", "dpm++2m", "naive-rk2"])
def test_linear_schedule_keeps_the_declared_order_at_the_clean_end(name):
    """With alpha linear in t the landing adds no first-order term: the fitted slope is the solver's order."""
    Ks = [8, 16, 32, 64]
    errors = _errors(name, "linear", "sync", 1e-3, Ks)
    assert slope(Ks, errors) > _solver(name).order - 0.35, errors


@pytest.mark.parametrize("t_min", T_MINS)
@pytest.mark.parametrize("name", ADAPTIVE)
def test_an_adaptive_method_with_one_step_reaches_the_state_of_32(name, t_min):
    oracle, z, p, ref = _reference("cosine", "sync", t_min)
    solver = ef.solvers.get(name, rtol=1e-9, atol=1e-9)
    one, many = (ef.solve(oracle, z, p, K, solver=solver, t_min=t_min) for K in (1, 32))
    assert (one.z - many.z).abs().max() < 1e-7
    assert (one.z - ref).abs().max() < 1e-7
    assert one.nfe < 3 * many.nfe  # its first step is picked once, not per grid interval


@pytest.mark.parametrize("name", [*ODE, "naive-rk2"])
def test_no_blow_up_at_any_step_count(name):
    """The issue's case: V=4, L=6, d=2, 64 noise draws; latents stay within the embeddings' reach."""
    oracle = ef.MarkovOracle.random(4, 6, 2, ef.Cosine(), torch.Generator().manual_seed(0))
    z = torch.randn(64, 6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    reach = float(oracle.embeddings.norm(dim=-1).max())
    steps = [1, 2, 3, 5, 8, 20] if not _solver(name).adaptive else [1, 3]
    for t_min in T_MINS:
        noise = float(ef.Cosine().sigma(torch.tensor(t_min, dtype=F64)))
        for K in steps:
            out = ef.solve(oracle, z, ef.Synchronous(), K, solver=_solver(name), t_min=t_min).z
            assert float(out.norm(dim=-1).max()) < 1.02 * reach + 10 * noise, (t_min, K)
            if K == 1 and t_min == 0.0 and not _solver(name).exponential:
                # one step must not collapse every draw onto one point (a single exponential step from
                # t = 1 does land on ehat(z, 1), the data mean, for every draw: that is DDIM itself)
                assert float(out.std(0).max()) > 0.1


@given(sch=schedules, data=st.data())
def test_the_regular_point_is_the_smallest_stable_time_above_the_floor(sch, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    t_from = torch.rand(64, generator=g, dtype=F64)
    t_to = t_from * torch.rand(64, generator=g, dtype=F64) ** 3  # many steps that end near 0
    t_to[:4] = 0.0
    reg = regular_point(sch, t_from, t_to, adaptive=False)
    assert bool(((t_to <= reg) & (reg <= t_from)).all())
    stiff = (t_from - reg) * stiffness_rate(sch, reg)
    assert float(stiff.max()) <= STIFFNESS * (1 + 1e-9)
    split = reg > t_to
    # a split step ends its solver part on the floor, where the stiffness number is exactly kappa, or,
    # when it starts below the floor, at once (the whole step is exponential)
    on_floor = (sch.log_snr(reg) - LOG_SNR_FLOOR).abs() < 1e-6
    at_kappa = (stiff - STIFFNESS).abs() < 1e-6
    below = (reg == t_from) & (sch.log_snr(t_from) >= LOG_SNR_FLOOR)
    assert bool((on_floor | at_kappa | below)[split].all())
    kept = ~split  # unsplit steps were neither stiff nor below the floor
    assert bool(((t_from - t_to) * stiffness_rate(sch, t_to) <= STIFFNESS)[kept].all())
    assert bool((sch.log_snr(t_to) <= LOG_SNR_FLOOR + 1e-9)[kept].all())
    loose = regular_point(sch, t_from, t_to, adaptive=True)  # error-controlled solvers: only the floor
    floor_ok = ((sch.log_snr(loose) - LOG_SNR_FLOOR).abs() < 1e-6) | (loose == t_from)
    assert bool((loose <= reg).all()) and bool(((loose == t_to) | floor_ok).all())
    assert torch.equal(regular_point(sch, t_to, t_from, adaptive=False), t_from)  # toward noise: untouched


def test_a_split_step_is_the_solver_to_the_regular_point_then_the_exponential_step():
    from evoflow.field import Field
    from evoflow.process import ddim_mean

    oracle = random_markov(3, 3, 2, ef.Linear(), seed=0)
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    t_from = torch.tensor([[0.3, 0.3, 0.0], [0.3, 0.2, 0.3]], dtype=F64)
    t_to = torch.zeros(2, 3, dtype=F64)
    seen = []

    class Spy(NaiveRK2):
        def advance(self, field, state, a, b, generator):
            seen.append(b.clone())
            return super().advance(field, state, a, b, generator)

    new = Spy().step(Field(oracle), State(z=z), t_from, t_to)
    (t_reg,) = seen
    moving = t_from > 0
    assert torch.allclose(t_reg[moving], t_from[moving] / (1 + STIFFNESS))  # linear: sigma'/sigma = 1/t
    mid = NaiveRK2().advance(Field(oracle), State(z=z), t_from, t_reg, None).z
    expected = ddim_mean(mid, Field(oracle)(mid, t_reg).ehat, t_reg, t_to, oracle.schedule)
    assert torch.allclose(new.z[moving], expected[moving], atol=1e-13)
    assert torch.equal(new.z[~moving], z[~moving])
