"""The torchdiffeq adapter behaves as torchdiffeq itself: one ``odeint`` over each smooth piece of the path."""

import pytest
import torch
from torchdiffeq import odeint

import evoflow as ef
import evoflow.solvers.external as external
from evoflow.paths import grid_times
from evoflow.process import denoised, velocity

F64 = torch.float64


def _direct(oracle, z, times, method, **kwargs):
    """The ODE dz/ds = u(z, tau(s)) dtau/ds along the rows of ``times`` (K+1, B, L), written out by hand."""
    calls = []

    def rate(s, y):
        calls.append(1)
        k = min(int(s), times.shape[0] - 2)
        dtau = times[k + 1] - times[k]
        tau = times[k] + (s - k) * dtau
        u = velocity(y, denoised(oracle(y, tau), oracle.embeddings, y), tau, oracle.schedule)
        return u * dtau[..., None]

    s = torch.arange(times.shape[0], dtype=F64)
    return odeint(rate, z, s, method=method, **kwargs)[-1], len(calls)


@pytest.mark.parametrize(("method", "kwargs"), [("explicit_adams", {}), ("implicit_adams", {}), ("rk4", {}),
                                                ("dopri5", {"rtol": 1e-8, "atol": 1e-8})])
def test_a_smooth_path_is_one_odeint_call_with_torchdiffeqs_own_result(markov, method, kwargs):
    """Synchronous to t_min = 0.3 (no stiff step): the adapter's end state and call count are those of
    odeint called directly over the rows (dopri5 lands on the end exactly, as the adapter asks)."""
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    times = grid_times(ef.Synchronous().grid(3, 24), 0.3)[:, None, :].expand(-1, 2, -1)
    if method == "dopri5":
        kwargs = {**kwargs, "options": {"step_t": torch.tensor([24.0], dtype=F64)}}
    expected, calls = _direct(markov, z, times, method, **kwargs)
    solver = ef.solvers.TorchDiffEq(method, **{k: v for k, v in kwargs.items() if k != "options"})
    got = ef.solve(markov, z, ef.Synchronous(), 24, solver=solver, t_min=0.3)
    assert torch.allclose(got.z, expected, rtol=0, atol=1e-13)
    assert got.nfe == calls


def test_runs_are_cut_at_kinks_and_landings_only(markov, monkeypatch):
    seen = []
    real = external.TorchDiffEq._odeint

    def spy(self, field, state, rows):
        seen.append(rows.shape[0] - 1)
        return real(self, field, state, rows)

    monkeypatch.setattr(external.TorchDiffEq, "_odeint", spy)
    z = torch.randn(2, 3, 2, dtype=F64)
    ef.solve(markov, z, ef.Synchronous(), 12, solver="torchdiffeq:rk4", t_min=0.3)
    assert seen == [12]  # no kink, no stiff step: the whole path in one call
    seen.clear()
    ef.solve(markov, z, ef.Staircase(1), 12, solver="torchdiffeq:rk4", t_min=0.3)
    assert seen == [4, 4, 4]  # one call per block: the staircase bends where a block ends
    seen.clear()
    ef.solve(markov, z, ef.Synchronous(), 12, solver="torchdiffeq:rk4", t_min=0.0)
    assert seen == [11, 1]  # the last step lands through the stiff end on its own
    seen.clear()
    grid = torch.cat([ef.Synchronous().grid(3, 4)[:2], ef.Synchronous().grid(3, 4)[1:]])  # a repeated row
    ef.solve(markov, z, grid, solver="torchdiffeq:rk4", t_min=0.3)
    assert seen == [1, 3]  # the idle step costs nothing and cuts the run


def test_frozen_tokens_stay_bit_for_bit_in_a_whole_path_run(markov):
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    z[1, 2, 0] = -0.0
    out = ef.solve(markov, z, ef.Staircase(1), 6, solver="torchdiffeq:dopri5", t_min=0.3, trajectory=True)
    still = (out.times[1:] == out.times[:-1])[..., None].expand_as(out.trajectory[1:])
    assert torch.equal(out.trajectory[1:][still], out.trajectory[:-1][still])
    assert torch.signbit(out.trajectory[3, 1, 2, 0])  # untouched while its time stays at 1
