"""Counts and reals from Python, NumPy and 0-d tensors: as_int, as_float, and the callers that use them."""

import ast
import math
import pathlib
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import evoflow as ef
from evoflow.arguments import as_float, as_int
from evoflow.solve import check_t_min
from tests.strategies import random_markov

F64 = torch.float64
INT32 = (-(2**31), 2**31 - 1)
INT_KINDS = {  # name: (constructor, range of values it holds)
    "int": (int, (-(2**70), 2**70)), "np.int64": (np.int64, INT32), "np.int32": (np.int32, INT32),
    "np.int16": (np.int16, (-(2**15), 2**15 - 1)), "np.uint32": (np.uint32, (0, 2**32 - 1)),
    "0-d np array": (np.array, INT32), "0-d int64 tensor": (torch.tensor, INT32),
    "0-d int32 tensor": (lambda k: torch.tensor(k, dtype=torch.int32), INT32),
}
REAL_KINDS = {
    "float": float, "np.float64": np.float64, "np.float32": np.float32, "0-d np array": np.array,
    "0-d float64 tensor": lambda x: torch.tensor(x, dtype=F64), "0-d float32 tensor": torch.tensor,
}


int_values = st.sampled_from(sorted(INT_KINDS)).flatmap(
    lambda kind: st.tuples(st.just(kind), st.integers(*INT_KINDS[kind][1])))


@given(kind_and_value=int_values)
def test_as_int_accepts_every_integer_kind_and_returns_a_plain_int(kind_and_value):
    kind, k = kind_and_value
    value = as_int(INT_KINDS[kind][0](k), "steps")
    assert type(value) is int and value == k


@pytest.mark.parametrize("bad", [True, False, np.bool_(True), torch.tensor(True), np.array(True), 2.0, np.float64(2.0),
                                 torch.tensor(2.0), "3", None, 2 + 0j, torch.tensor([3]), np.array([3]), [3]],
                         ids=repr)
def test_as_int_refuses_what_is_not_a_single_integer(bad):
    with pytest.raises(TypeError, match=r"^steps must be an integer \(int, NumPy integer or 0-d integer tensor\)"):
        as_int(bad, "steps")


def test_as_int_bounds_are_inclusive_and_named():
    assert as_int(1, "n", minimum=1) == 1 and as_int(np.int64(5), "n", maximum=5) == 5
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got 0$"):
        as_int(0, "n", minimum=1)
    with pytest.raises(ValueError, match=r"^n must be an integer <= 5, got 6$"):
        as_int(torch.tensor(6), "n", maximum=5)
    with pytest.raises(ValueError, match=r"^block must be an integer in \[1, 4\], got -2$"):
        as_int(np.int8(-2), "block", minimum=1, maximum=4)


@given(x=st.floats(allow_nan=False, allow_infinity=False, width=32), kind=st.sampled_from(sorted(REAL_KINDS)))
def test_as_float_accepts_every_real_kind_and_returns_a_plain_float(x, kind):
    value = as_float(REAL_KINDS[kind](x), "window")
    assert type(value) is float and value == x  # x is exact in float32, so every kind holds it exactly


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), torch.tensor(3), Fraction(3, 1), np.array(3)],
                         ids=repr)
def test_as_float_accepts_integers_and_other_reals(value):
    assert as_float(value, "t_min") == 3.0 and type(as_float(value, "t_min")) is float


@pytest.mark.parametrize("bad", [True, np.bool_(False), torch.tensor(True), 1j, torch.tensor(1j), np.array(1j), "0.1",
                                 None, torch.tensor([0.1]), np.array([0.1]), [0.1]], ids=repr)
def test_as_float_refuses_what_is_not_a_single_real(bad):
    kind = r"\(int, float, NumPy number or 0-d real tensor\)"
    with pytest.raises(TypeError, match=rf"^t_min must be a real number {kind}"):
        as_float(bad, "t_min")


@pytest.mark.parametrize(("value", "low", "high", "low_open", "high_open", "interval"), [
    (1.0, 0.0, 1.0, False, True, "[0, 1)"),
    (0.0, 0.0, None, True, False, "(0, inf)"),
    (-0.5, 0.0, 1.0, False, False, "[0, 1]"),
    (math.inf, 0.0, None, True, False, "(0, inf)"),
    (-math.inf, None, None, False, False, "(-inf, inf)"),
    (math.nan, None, None, False, False, "(-inf, inf)"),
    (math.nan, 0.0, 1.0, False, False, "[0, 1]"),
])
def test_as_float_range_failures_state_the_interval_and_the_value(value, low, high, low_open, high_open, interval):
    with pytest.raises(ValueError, match=rf"^x must be a real number in {re.escape(interval)}, got "):
        as_float(value, "x", low=low, high=high, low_open=low_open, high_open=high_open)


def test_as_float_closed_ends_are_included_and_explicit_inf_is_allowed():
    assert as_float(0.0, "x", low=0.0, high=1.0) == 0.0
    assert as_float(np.float32(1.0), "x", low=0.0, high=1.0) == 1.0
    assert as_float(math.inf, "x", high=math.inf) == math.inf


def test_the_coercion_module_imports_no_numpy_or_torch():
    tree = ast.parse(pathlib.Path(ef.__file__).with_name("arguments.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "math", "numbers", "operator"}, imported


@pytest.mark.parametrize("t_min", [np.float32(0.1), np.float64(0.1), torch.tensor(0.1), torch.tensor(0), 0, 0.25])
def test_check_t_min_accepts_any_real_in_range(t_min):
    assert check_t_min(t_min) == float(t_min) and type(check_t_min(t_min)) is float


def test_check_t_min_messages_do_not_contradict_the_value():
    with pytest.raises(ValueError, match=r"^t_min must be a real number in \[0, 1\), got 1\.0$"):
        check_t_min(np.float32(1.0))
    with pytest.raises(ValueError, match=r"^t_min must be a real number in \[0, 1\), got -0\.5$"):
        check_t_min(torch.tensor(-0.5))
    with pytest.raises(ValueError, match=r"t_min .* got nan"):
        check_t_min(float("nan"))
    with pytest.raises(TypeError, match="t_min"):
        check_t_min(True)
    with pytest.raises(TypeError, match="t_min"):
        check_t_min("0.1")


def test_solve_with_numpy_and_tensor_scalars_equals_the_plain_call(markov):
    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    plain = ef.solve(markov, z, ef.Staircase(1), 6, t_min=0.1)
    numpy = ef.solve(markov, z, ef.Staircase(np.int64(1)), np.int64(6), t_min=np.float64(0.1))
    tensors = ef.solve(markov, z, ef.Staircase(torch.tensor(1)), torch.tensor(6), t_min=torch.tensor(0.1, dtype=F64))
    assert torch.equal(plain.z, numpy.z) and torch.equal(plain.z, tensors.z) and plain.nfe == numpy.nfe == tensors.nfe
    single = ef.solve(markov, z, ef.Synchronous(), np.int32(4), t_min=np.float32(0.1))  # the reported call
    assert torch.equal(single.z, ef.solve(markov, z, ef.Synchronous(), 4, t_min=float(np.float32(0.1))).z)
    with pytest.raises(TypeError, match="steps"):
        ef.solve(markov, z, ef.Synchronous(), 6.0)
    with pytest.raises(TypeError, match="steps"):
        ef.solve(markov, z, ef.Synchronous().grid(3, 2), 2.0)  # a float steps is refused next to a grid too


def test_estimator_counts_accept_numpy_and_tensor_integers():
    path, sch = ef.Synchronous(), ef.Cosine()
    for sampler in (ef.Uniform(), ef.Antithetic(), ef.Stratified(), ef.LogSNRImportance(floor=np.float32(0.5))):
        plain = sampler.sample(2, 4, path, 3, sch, 0.05, torch.Generator().manual_seed(0))
        mixed = sampler.sample(np.int64(2), torch.tensor(4), path, np.int32(3), sch, np.float64(0.05),
                               torch.Generator().manual_seed(0))
        assert all(torch.equal(a, b) for a, b in zip(plain, mixed, strict=True)), sampler
    dist = ef.PathDistribution([path, ef.Staircase(1)])
    assert torch.equal(dist.pick(np.int64(5), torch.Generator().manual_seed(1)),
                       dist.pick(5, torch.Generator().manual_seed(1)))


def test_estimator_bad_counts_name_themselves():
    path, sch = ef.Synchronous(), ef.Cosine()
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got 0$"):
        ef.Uniform().sample(2, 0, path, 3, sch, 0.05)
    with pytest.raises(TypeError, match=r"^groups must be an integer"):
        ef.Stratified().unit(2.0, 4, None)
    with pytest.raises(ValueError, match=r"^n \(the samples per group\) must be even"):
        ef.Antithetic().unit(1, np.int64(3), None)
    with pytest.raises(ValueError, match=r"^length must be an integer >= 1"):
        ef.LogSNRImportance().sample(1, 4, path, 0, sch, 0.05)
    with pytest.raises(ValueError, match=r"^t_min must be a real number in \[0, 1\)"):
        ef.LogSNRImportance().sample(1, 4, path, 3, sch, 1.5)
    with pytest.raises(TypeError, match=r"^floor must be a real number"):
        ef.LogSNRImportance(floor=True)
    with pytest.raises(ValueError, match=r"^count must be an integer >= 1"):
        ef.PathDistribution([path]).pick(0)


def test_markov_random_takes_numpy_sizes():
    a = random_markov(3, 4, 2, ef.Cosine(), seed=1)
    b = ef.MarkovOracle.random(np.int64(3), np.int64(4), torch.tensor(2), ef.Cosine(),
                               torch.Generator().manual_seed(1), np.float32(2.0), np.float64(1.0))
    assert torch.equal(a.transition, b.transition) and torch.equal(a.embeddings, b.embeddings)
    assert b.length == 4 and type(b.length) is int
