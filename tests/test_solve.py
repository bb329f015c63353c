"""solve(): per-token batching, exact call counts, the t_min map, the clean end, bad input."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import evoflow as ef
from tests.strategies import monotone_grids, random_markov, schedules, seeds

F64 = torch.float64
DETERMINISTIC = [n for n in ef.solvers.names() if ef.solvers.get(n).kind == "ode"]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_different_paths_in_one_batch_equal_separate_calls(name, markov):
    paths = [ef.Synchronous(), ef.Staircase(1), ef.Rolling(1.5), ef.Staircase(3)]
    z = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    together = ef.solve(markov, z, paths, 6, solver=name, t_min=0.05)
    for b, p in enumerate(paths):
        alone = ef.solve(markov, z[b:b + 1], p, 6, solver=name, t_min=0.05)
        # adaptive methods share one error norm over the batch, so they agree to their tolerance only
        tol = 1e-5 if ef.solvers.get(name).adaptive else 1e-11
        assert torch.allclose(together.z[b], alone.z[0], rtol=tol, atol=tol), p


@given(grid=monotone_grids(length=3, steps=5, batch=2), seed=seeds)
def test_explicit_grids_per_sequence_equal_separate_calls(grid, seed):
    oracle = random_markov(3, 3, 2, ef.Cosine(), seed)
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    together = ef.solve(oracle, z, grid, solver="heun", t_min=0.1)
    for b in range(2):
        alone = ef.solve(oracle, z[b:b + 1], grid[:, b], solver="heun", t_min=0.1)
        assert torch.allclose(together.z[b], alone.z[0], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("name", "per_step"), [("euler", 1), ("ddim", 1), ("dpm++2m", 1), ("midpoint", 2),
                                                ("heun", 2), ("rk4", 4), ("torchdiffeq:rk4", 4)])
def test_nfe_is_the_exact_number_of_denoiser_calls(name, per_step, markov):
    calls = []

    class Counting:
        schedule, embeddings = markov.schedule, markov.embeddings

        def __call__(self, z, tau):
            calls.append(1)
            return markov(z, tau)

    z = torch.randn(2, 3, 2, dtype=F64)
    # t_min = 0.3 and 4 steps per block: no step is stiff, each costs the solver's stages
    res = ef.solve(Counting(), z, ef.Staircase(1), 12, solver=name, t_min=0.3)
    assert res.nfe == len(calls) == 12 * per_step
    # t_min = 0.1 and 2 steps per block: each of the 3 blocks lands through a stiff last step, which
    # costs one more call (the exponential step from the regular point), except for DDIM
    calls.clear()
    res = ef.solve(Counting(), z, ef.Staircase(1), 6, solver=name, t_min=0.1)
    landings = 0 if ef.solvers.get(name).exponential else 3
    assert res.nfe == len(calls) == 6 * per_step + landings


def test_t_min_maps_the_path_and_the_trajectory_is_recorded(markov):
    z = torch.randn(2, 3, 2, dtype=F64)
    res = ef.solve(markov, z, ef.Rolling(2.0), 8, solver="euler", t_min=0.2, trajectory=True)
    expected = 0.2 + 0.8 * ef.Rolling(2.0).grid(3, 8)
    assert torch.equal(res.times, expected[:, None, :].expand(-1, 2, -1))
    assert res.trajectory.shape == (9, 2, 3, 2)
    assert torch.equal(res.trajectory[0], z) and torch.equal(res.trajectory[-1], res.z)
    assert torch.equal(res.tau, torch.full((2, 3), 0.2, dtype=F64))


@given(sch=schedules, seed=seeds, name=st.sampled_from([*DETERMINISTIC, "ddim-ancestral"]))
def test_reaching_the_clean_end_gives_finite_latents_near_embeddings(sch, seed, name):
    oracle = random_markov(3, 3, 2, sch, seed, scale=2.0)
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    res = ef.solve(oracle, z, ef.Synchronous(), 32, solver=name, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res.z).all()
    if not isinstance(sch, ef.LogLinear):  # alpha(0) = 1, sigma(0) = 0: each latent lands on ehat
        dist = ((res.z[:, :, None] - oracle.embeddings) ** 2).sum(-1).min(-1).values
        assert dist.max() < 0.05


def test_bad_arguments_name_themselves(markov):
    z = torch.randn(1, 3, 2, dtype=F64)
    with pytest.raises(ValueError, match="available"):
        ef.solve(markov, z, ef.Synchronous(), 4, solver="leapfrog")
    with pytest.raises(ValueError, match="steps"):
        ef.solve(markov, z, ef.Synchronous(), 0)
    with pytest.raises(ValueError, match="steps is required"):
        ef.solve(markov, z, ef.Synchronous())
    with pytest.raises(ValueError, match="t_min"):
        ef.solve(markov, z, ef.Synchronous(), 4, t_min=1.0)
    with pytest.raises(ValueError, match="z has last dimension"):
        ef.solve(markov, torch.randn(1, 3, 5, dtype=F64), ef.Synchronous(), 4)
    with pytest.raises(ValueError, match="z must be finite"):
        ef.solve(markov, z * float("nan"), ef.Synchronous(), 4)
    with pytest.raises(ValueError, match="non-increasing"):
        ef.solve(markov, z, ef.Synchronous().grid(3, 4).flip(0), None)
    with pytest.raises(ValueError, match="multiple"):
        ef.solve(markov, z, ef.Staircase(1), 4)
    with pytest.raises(TypeError, match="denoiser"):
        ef.solve(lambda z, t: None, z, ef.Synchronous(), 4)


def test_a_denoiser_returning_nan_is_reported_not_returned(markov):
    class Broken:
        schedule, embeddings = markov.schedule, markov.embeddings

        def __call__(self, z, tau):
            out = markov(z, tau)
            out.logits = out.logits * float("nan")
            return out

    with pytest.raises(FloatingPointError, match="non-finite"):
        ef.solve(Broken(), torch.randn(1, 3, 2, dtype=F64), ef.Synchronous(), 4)


def test_prompt_columns_stay_clean_and_condition_the_rest(markov):
    """Columns at time 0 throughout are prompt tokens: never moved, seen clean by the denoiser."""
    seen = []

    class Spy:
        schedule, embeddings = markov.schedule, markov.embeddings

        def __call__(self, z, tau):
            seen.append(tau[:, 0].clone())
            return markov(z, tau)

    z = torch.randn(2, 3, 2, dtype=F64)
    z[:, 0] = markov.embeddings[2]
    grid = torch.cat([torch.zeros(7, 1, dtype=F64), ef.Staircase(1).grid(2, 6)], dim=1)
    res = ef.solve(Spy(), z, grid, solver="heun", t_min=0.1)
    assert torch.equal(res.z[:, 0], z[:, 0]) and all((t == 0).all() for t in seen)
    assert (res.tau[:, 1:] == 0.1).all() and (res.tau[:, 0] == 0).all()


def test_solve_records_no_graph_unless_asked(markov):
    z = torch.randn(2, 3, 2, dtype=F64, requires_grad=True)
    out = ef.solve(markov, z, ef.Synchronous(), 4, solver="heun", t_min=0.2)
    assert not out.z.requires_grad  # a sampler: no graph, no memory held for a backward pass
    kept = ef.solve(markov, z, ef.Synchronous(), 4, solver="heun", t_min=0.2, grad=True)
    assert torch.equal(kept.z.detach(), out.z)
    with pytest.raises(TypeError, match="grad"):
        ef.solve(markov, z, ef.Synchronous(), 4, grad="yes")


@pytest.mark.parametrize("name", ["heun", "dpm++2m", "torchdiffeq:rk4"])
def test_a_gradient_through_the_solve_matches_finite_differences(name, markov):
    """grad=True: d <w, z_out> / d z_in by autograd against central differences, landing step included."""
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    w = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    dz = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(5), dtype=F64)

    def f(zz, grad=False):
        return (ef.solve(markov, zz, ef.Staircase(1), 6, solver=name, t_min=1e-3, grad=grad).z * w).sum()

    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(zz, grad=True), zz)
    eps = 1e-6
    fd = (f(z + eps * dz) - f(z - eps * dz)) / (2 * eps)
    assert abs(float((g * dz).sum()) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))


def _integrate(oracle, z, grid, name, restrict, generator=None):
    from evoflow.field import Field
    from evoflow.solve import GridController, integrate
    from evoflow.solvers import State

    return integrate(Field(oracle), ef.solvers.get(name), State(z=z), GridController(grid), generator,
                     restrict=restrict).z


@pytest.mark.parametrize("name", [*DETERMINISTIC, "ddim-ancestral"])
def test_restricting_ehat_and_u_to_the_moving_columns_changes_no_latent(name, monkeypatch):
    """integrate(restrict=True) against the full field on per-sequence staircase grids (few columns move per
    step), the stochastic DDIM under the same seed; the spans seen show that fewer columns were computed."""
    from evoflow.field import Field

    oracle = random_markov(4, 6, 2, ef.Cosine(), seed=9)
    z = torch.randn(2, 6, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    grid = 0.05 + 0.95 * torch.stack([ef.Staircase(1).grid(6, 12), ef.Staircase(2).grid(6, 12)], 1)  # (13, 2, 6)
    spans = []
    inner = Field.ehat_and_u
    monkeypatch.setattr(Field, "ehat_and_u", lambda self, *a: spans.append(a[-1]) or inner(self, *a))
    short = _integrate(oracle, z, grid, name, True, torch.Generator().manual_seed(2))
    if not ef.solvers.get(name).whole_path:  # a whole-path solver integrates the fixed grid at once, unrestricted
        assert spans and max(hi - lo for lo, hi in spans) <= 2
    full = _integrate(oracle, z, grid, name, False, torch.Generator().manual_seed(2))
    tol = 1e-9 if ef.solvers.get(name).adaptive else 1e-12
    torch.testing.assert_close(short, full, rtol=tol, atol=tol)


def test_a_gradient_through_a_restricted_solve_equals_the_full_one():
    oracle = random_markov(4, 5, 2, ef.Cosine(), seed=10)
    z = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(3), dtype=F64, requires_grad=True)
    grid = 0.1 + 0.9 * ef.Staircase(1).grid(5, 10)[:, None].expand(-1, 2, -1)
    (g_short,) = torch.autograd.grad(_integrate(oracle, z, grid, "heun", True).square().sum(), z)
    (g_full,) = torch.autograd.grad(_integrate(oracle, z, grid, "heun", False).square().sum(), z)
    assert bool(g_short.abs().max() > 0)
    torch.testing.assert_close(g_short, g_full, rtol=1e-12, atol=1e-12)
