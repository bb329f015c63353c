"""Schedules: closed-form derivatives against autograd, endpoints without NaN, monotonicity."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import evoflow as ef
from evoflow.schedules import check_times, schedule_names

F64 = torch.float64
ALL = [ef.get_schedule(n) for n in schedule_names()] + [ef.LogLinear(gamma_min=-5.0, gamma_max=3.0)]
interior = st.floats(1e-3, 1 - 1e-3)


def _grad(fn, t: float) -> float:
    x = torch.tensor(t, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(fn(x), x)
    return float(g)


@pytest.mark.parametrize("sch", ALL, ids=repr)
@given(t=interior)
def test_closed_form_derivatives_match_autograd(sch, t):
    tt = torch.tensor(t, dtype=F64)
    for value, deriv in [(sch.alpha, sch.dalpha), (sch.sigma, sch.dsigma), (sch.snr, sch.dsnr),
                         (sch.log_snr, sch.dlog_snr)]:
        assert float(deriv(tt)) == pytest.approx(_grad(value, t), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("sch", ALL, ids=repr)
def test_no_nan_at_the_ends_and_correct_limits(sch):
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for fn in (sch.alpha, sch.sigma, sch.dalpha, sch.dsigma, sch.snr, sch.log_snr, sch.dsnr, sch.dlog_snr):
        assert not torch.isnan(fn(t)).any(), fn.__name__
    if not isinstance(sch, ef.LogLinear):
        assert sch.alpha(t).tolist() == [1.0, 0.0]  # exact: the prior at t = 1 is exact
        assert sch.sigma(t).tolist() == [0.0, 1.0]
        assert sch.snr(t).tolist() == [float("inf"), 0.0]
        assert float(sch.dsnr(t)[1]) == 0.0


@pytest.mark.parametrize("sch", ALL, ids=repr)
def test_monotone_and_inverse(sch):
    t = torch.linspace(0, 1, 201, dtype=F64)
    assert (sch.alpha(t).diff() < 0).all() and (sch.sigma(t).diff() > 0).all()
    assert (sch.log_snr(t).diff() < 0).all()
    inner = t[1:-1]
    assert torch.allclose(sch.t_of_log_snr(sch.log_snr(inner)), inner, atol=1e-12)


def test_variance_preserving_schedules():
    t = torch.rand(50, dtype=F64)
    for sch in (ef.Cosine(), ef.LogLinear()):
        assert torch.allclose(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, torch.ones_like(t), atol=1e-14)


def test_loglinear_logsnr_is_linear_between_its_gammas():
    sch = ef.LogLinear(gamma_min=-7.0, gamma_max=5.0)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    # logSNR recomputed from alpha and sigma, independent of the closed form
    recomputed = 2 * (sch.alpha(t).log() - sch.sigma(t).log())
    assert torch.allclose(recomputed, torch.tensor([5.0, 2.0, -7.0], dtype=F64), atol=1e-12)


def test_get_schedule_errors_name_the_choices():
    with pytest.raises(ValueError, match="linear"):
        ef.get_schedule("quadratic")
    with pytest.raises(ValueError, match="gamma_max"):
        ef.LogLinear(gamma_min=3.0, gamma_max=1.0)
    assert isinstance(ef.get_schedule("loglinear", gamma_min=-3.0), ef.LogLinear)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_check_times_rejects_bad_times(bad):
    with pytest.raises(ValueError, match="tau"):
        check_times(torch.tensor([0.5, bad], dtype=F64), "tau")
    with pytest.raises(TypeError, match="tau"):
        check_times(torch.tensor([0, 1]), "tau")
