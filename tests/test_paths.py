"""Paths and grids: ends, monotonicity, knots, AR/diffusion limits, validation, time samplers."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import evoflow as ef
from evoflow.paths import as_grid
from tests.strategies import monotone_grids

F64 = torch.float64
paths = st.one_of(
    st.just(ef.Synchronous()),
    st.integers(1, 4).map(lambda b: ef.Staircase(block=b)),
    st.floats(0.5, 6.0).map(lambda w: ef.Rolling(window=w)),
)


def _steps_for(path, L, k):
    return path.n_blocks(L) * k if isinstance(path, ef.Staircase) else k


@given(path=paths, L=st.integers(1, 9), k=st.integers(1, 12))
def test_grid_goes_from_ones_to_zeros_monotonically(path, L, k):
    steps = _steps_for(path, L, k)
    T = path.grid(L, steps)
    assert T.shape == (steps + 1, L) and T.dtype == F64
    assert (T[0] == 1).all() and (T[-1] == 0).all()
    assert (T.diff(dim=0) <= 0).all() and ((T >= 0) & (T <= 1)).all()


@given(path=paths, L=st.integers(1, 7), extra=st.integers(0, 20))
def test_grid_contains_every_knot_when_budget_allows(path, L, extra):
    inner = [k for k in path.knot_clocks(L) if k < path.clock_end(L)]
    steps = len(inner) + 1 + extra
    if isinstance(path, ef.Staircase):
        steps = path.n_blocks(L) * (1 + extra)
    clocks = path.grid_clocks(L, steps).tolist()
    T = path.grid(L, steps)
    for k in inner:
        assert k in clocks  # exactly, not up to rounding
        row = path.tau(torch.tensor([k / path.clock(L)], dtype=F64), L)[0]
        assert ((T - row).abs().max(dim=1).values < 1e-12).any()


@given(L=st.integers(1, 12))
def test_staircase_one_is_autoregressive(L):
    T = ef.Staircase(1).grid(L, L)
    for k in range(L):
        changed = (T[k + 1] != T[k]).nonzero().flatten().tolist()
        assert changed == [k]
        assert T[k, k] == 1.0 and T[k + 1, k] == 0.0  # one jump 1 -> 0


@given(L=st.integers(1, 10), b=st.integers(1, 4), m=st.integers(1, 4))
def test_staircase_blocks_keep_a_clean_prefix_and_noisy_suffix(L, b, m):
    path = ef.Staircase(block=b)
    T = path.grid(L, path.n_blocks(L) * m)
    block = torch.arange(L) // b
    for row in T:
        active = ((row > 0) & (row < 1)).nonzero().flatten()
        if len(active):
            j = int(block[active[0]])
            assert (block[active] == j).all()
            assert (row[block < j] == 0).all() and (row[block > j] == 1).all()


def test_staircase_full_block_is_synchronous():
    assert torch.equal(ef.Staircase(block=6).grid(6, 5), ef.Synchronous().grid(6, 5))


@given(L=st.integers(1, 8), W=st.floats(0.3, 5.0), s=st.floats(0.0, 1.0))
def test_rolling_matches_its_formula(L, W, s):
    tau = ef.Rolling(W).tau(torch.tensor([s], dtype=F64), L)[0]
    i = torch.arange(L, dtype=F64)
    expected = ((i + W - s * (L + W)) / W).clamp(0, 1)  # THEORY section 4
    assert torch.allclose(tau, expected, atol=1e-12)


def test_rolling_limits_are_staircase_and_synchronous():
    L, s = 6, torch.linspace(0, 1, 301, dtype=F64)
    narrow = ef.Rolling(1e-3).tau(s, L)
    assert (((narrow > 0) & (narrow < 1)).sum(1) <= 1).all()  # at most one token in flight: AR
    wide = ef.Rolling(1e4).tau(s, L)
    assert (wide - (1 - s)[:, None]).abs().max() < 1e-3  # synchronous diffusion


@given(path=paths, L=st.integers(1, 6), s=st.floats(0.01, 0.99))
def test_dtau_is_the_derivative_of_tau(path, L, s):
    h = 1e-7
    knots = path.knots(L)
    if len(knots) and (knots - s).abs().min() < 2 * h:
        return
    fd = (path.tau(torch.tensor([s + h], dtype=F64), L) - path.tau(torch.tensor([s - h], dtype=F64), L)) / (2 * h)
    assert torch.allclose(path.dtau(torch.tensor([s], dtype=F64), L), fd, atol=1e-5)
    assert (path.dtau(torch.tensor([s], dtype=F64), L) <= 0).all()


@given(grid=monotone_grids(length=4, steps=5))
def test_validate_grid_accepts_monotone_grids_and_prompts(grid):
    assert torch.equal(ef.validate_grid(grid), grid)
    with_prompt = torch.cat([torch.zeros(grid.shape[0], 1, dtype=F64), grid], dim=1)
    ef.validate_grid(with_prompt)


def _bad_grids():
    ok = ef.Synchronous().grid(3, 4)
    up = ok.clone()
    up[2, 1] = 0.9
    nan = ok.clone()
    nan[1, 0] = float("nan")
    start = ok.clone()
    start[0, 2] = 0.8
    end = ok.clone()
    end[-1, 0] = 0.1
    return {"non-increasing": up, "finite": nan, "start": start, "end": end,
            "shape": ok[:1], "out of range": ok * 1.5}


@pytest.mark.parametrize("name", list(_bad_grids()))
def test_validate_grid_rejects_bad_grids(name):
    with pytest.raises(ValueError, match="grid"):
        ef.validate_grid(_bad_grids()[name])
    with pytest.raises(TypeError, match="grid"):
        ef.validate_grid(torch.ones(3, 2, dtype=torch.int64))


def test_bad_steps_and_blocks():
    with pytest.raises(ValueError, match="steps"):
        ef.Synchronous().grid(4, 0)
    with pytest.raises(TypeError, match="steps"):
        ef.Synchronous().grid(4, 2.5)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        ef.Staircase(block=2).grid(5, 4)  # 3 blocks
    with pytest.raises(ValueError, match="block"):
        ef.Staircase(block=0)
    with pytest.raises(ValueError, match="window"):
        ef.Rolling(window=-1.0)
    with pytest.raises(ValueError, match="length"):
        ef.Synchronous().grid(0, 3)


def test_as_grid_batches_different_paths_and_checks_sizes():
    ps = [ef.Synchronous(), ef.Staircase(1), ef.Rolling(2.0)]
    g = as_grid(ps, 3, 6, 3)
    assert g.shape == (7, 3, 3)
    for b, p in enumerate(ps):
        assert torch.equal(g[:, b], p.grid(3, 6))
    with pytest.raises(ValueError, match="batch"):
        as_grid(ps, 3, 6, 2)
    with pytest.raises(ValueError, match="columns"):
        as_grid(ef.Synchronous().grid(4, 2), 3, None, 1)
    with pytest.raises(TypeError, match="path"):
        as_grid("diagonal", 3, 2, 1)


def test_time_samplers():
    g = torch.Generator().manual_seed(0)
    t = ef.IndependentTimes().sample(4000, 5, g)
    assert t.shape == (4000, 5) and ((t >= 0) & (t <= 1)).all()
    assert abs(float(t.mean()) - 0.5) < 0.01  # 4 standard errors of a uniform mean
    on_path = ef.PathTimes(ef.Staircase(1)).sample(200, 5, g)
    assert ((on_path > 0) & (on_path < 1)).sum(1).max() <= 1  # one token in flight on the AR path
    assert (on_path.diff(dim=1) >= 0).all()  # clean prefix, noisy suffix
    pre = ef.PrefixTimes().sample(300, 6, g)
    assert (pre.diff(dim=1) >= 0).all()
    assert ((pre > 0).sum(1) > 0).all()  # the prefix is shorter than the sequence
    mix = ef.MixtureTimes([ef.IndependentTimes(), ef.PathTimes(ef.Synchronous())], [0.0, 1.0]).sample(50, 4, g)
    assert (mix == mix[:, :1]).all()  # weight 1 on the synchronous sampler
    with pytest.raises(ValueError, match="weights"):
        ef.MixtureTimes([ef.IndependentTimes()], [-1.0])


@given(grid=monotone_grids(length=3, steps=4, batch=2), m=st.integers(1, 5))
def test_refine_nests_the_grid_on_the_same_path(grid, m):
    fine = ef.paths.refine(grid, m)
    assert fine.shape == (4 * m + 1, 2, 3)
    assert torch.equal(fine[::m], grid)  # every original row is kept: nested refinement (C5)
    ef.validate_grid(fine)
    mid = fine[1::m] if m > 1 else None
    if mid is not None:  # the first new point of each step lies on the straight segment, 1/m of the way
        assert torch.allclose(mid, grid[:-1] + (grid[1:] - grid[:-1]) / m)
    with pytest.raises(ValueError, match="m must be"):
        ef.paths.refine(grid, 0)


counts = st.sampled_from([int, np.int64, np.int32, np.uint8, torch.tensor])


@given(path=paths, L=st.integers(1, 7), k=st.integers(1, 6), kind=counts)
def test_numpy_and_tensor_counts_give_the_same_grid(path, L, k, kind):
    steps = _steps_for(path, L, k)
    assert torch.equal(path.grid(kind(L), kind(steps)), path.grid(L, steps))
    s = torch.linspace(0, 1, 5, dtype=F64)
    assert torch.equal(path.tau(s, kind(L)), path.tau(s, L)) and torch.equal(path.dtau(s, kind(L)), path.dtau(s, L))
    assert torch.equal(as_grid(path, kind(L), kind(steps), kind(2)), as_grid(path, L, steps, 2))


def test_numpy_and_tensor_path_parameters_build_the_same_paths():
    assert torch.equal(ef.Staircase(np.int64(2)).grid(6, 6), ef.Staircase(2).grid(6, 6))
    assert ef.Staircase(torch.tensor(3)).block == 3 and type(ef.Staircase(np.int16(3)).block) is int
    assert torch.equal(ef.Rolling(np.float32(2.0)).grid(5, 9), ef.Rolling(2.0).grid(5, 9))
    assert ef.Rolling(torch.tensor(1.5)).window == 1.5 and ef.Rolling(np.int64(3)).window == 3.0
    g = ef.Synchronous().grid(3, 4)
    assert torch.equal(ef.paths.refine(g, np.int64(3)), ef.paths.refine(g, 3))


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: ef.Staircase(2.0), TypeError, "^block must be an integer"),
    (lambda: ef.Staircase(True), TypeError, "^block must be an integer"),
    (lambda: ef.Staircase(np.int64(0)), ValueError, "^block must be an integer >= 1, got 0$"),
    (lambda: ef.Rolling(True), TypeError, "^window must be a real number"),
    (lambda: ef.Rolling(float("nan")), ValueError, r"^window must be a real number in \(0, inf\), got nan$"),
    (lambda: ef.Rolling(float("inf")), ValueError, r"^window must be a real number in \(0, inf\)"),
    (lambda: ef.Rolling(np.float32(0.0)), ValueError, r"^window must be a real number in \(0, inf\), got 0\.0$"),
    (lambda: ef.Synchronous().grid(4, 2.0), TypeError, "^steps must be an integer"),
    (lambda: ef.Synchronous().grid(np.float64(4.0), 2), TypeError, "^length must be an integer"),
    (lambda: ef.Synchronous().tau(0.5, 0), ValueError, "^length must be an integer >= 1, got 0$"),
    (lambda: ef.paths.refine(ef.Synchronous().grid(3, 2), 2.0), TypeError, "^m must be an integer"),
    (lambda: as_grid(ef.Synchronous().grid(3, 2), 3, 2.0, 1), TypeError, "^steps must be an integer"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_counts_and_reals_name_the_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()


@given(path=paths, L=st.integers(1, 6), s=st.floats(0.0, 1.0))
def test_a_scalar_s_gives_one_time_vector(path, L, s):
    row = path.tau(torch.tensor([s], dtype=F64), L)[0]
    for scalar in (s, np.float64(s), torch.tensor(s, dtype=F64)):
        assert path.tau(scalar, L).shape == (L,) and torch.equal(path.tau(scalar, L), row)
        assert torch.equal(path.dtau(scalar, L), path.dtau(torch.tensor([s], dtype=F64), L)[0])
    assert torch.equal(path.tau([s, s], L), row.expand(2, L))  # a list is a batch of s, like a 1-d tensor


def test_tau_of_s_has_shape_s_shape_plus_length():
    path = ef.Staircase(1)
    assert torch.equal(path.tau(0.5, 6), torch.tensor([0, 0, 0, 1, 1, 1], dtype=F64))  # the reported IndexError
    s = torch.rand(3, 4, dtype=F64)
    assert path.tau(s, 6).shape == (3, 4, 6) and path.dtau(s, 6).shape == (3, 4, 6)
    assert torch.equal(path.tau(s, 6)[1], path.tau(s[1], 6))
    assert path.tau(torch.empty(0, dtype=F64), 6).shape == (0, 6)
    assert path.tau(torch.tensor([0, 1]), 6).dtype == F64  # integer s is read as a real in [0, 1]


@pytest.mark.parametrize("bad", [2.0, -0.1, float("nan"), [0.5, 1.5], torch.tensor([0.2, float("nan")])], ids=repr)
def test_s_outside_the_unit_interval_is_refused(bad):
    for fn in (ef.Staircase(1).tau, ef.Staircase(1).dtau, ef.Rolling(2.0).tau):
        with pytest.raises(ValueError, match=r"^s must lie in \[0, 1\] and be finite; found "):
            fn(bad, 6)


@pytest.mark.parametrize("bad", [True, torch.tensor([True]), np.array([False]), "0.5", torch.tensor([0.5j])], ids=repr)
def test_s_that_is_not_real_is_refused(bad):
    with pytest.raises(TypeError, match=r"^s must be a real number, a sequence or a tensor"):
        ef.Synchronous().tau(bad, 3)
