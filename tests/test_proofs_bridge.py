"""The bridge between spec and code: the proofs' sympy expressions, lambdified, against the torch code.

Each proof module builds its expressions for generic ``alpha(t), sigma(t)``; here the concrete
schedules of :func:`proofs.p01_continuity.schedule` are substituted, the result is lambdified and
evaluated at hypothesis-drawn points away from the singular ends, in float64.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
import pathlib
import re

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

import evoflow as ef
from evoflow import process
from proofs import p01_continuity as p01
from proofs import p03_gaussian_step_kl as p03
from proofs import p04_continuous_limit as p04
from proofs import p07_ar_limit as p07
from proofs import p10_ce_surrogate as p10

F64 = torch.float64
NAMES = ["linear", "cosine", "loglinear"]
RTOL, ATOL = 1e-9, 1e-10
D = 3  # embedding dimension of the drawn points

times = st.floats(0.01, 0.99)
coords = st.floats(-3.0, 3.0)
vectors = st.lists(coords, min_size=D, max_size=D)


def _close(got: torch.Tensor, want, rtol: float = RTOL, atol: float = ATOL) -> None:
    want = torch.as_tensor(np.asarray(want, dtype=np.float64))
    torch.testing.assert_close(got.to(F64), want.reshape(got.shape), rtol=rtol, atol=atol)


def _tensor(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


@functools.cache
def schedule_fns(name: str) -> dict:
    a, s = p01.schedule(name)
    x = p01.t
    exprs = {"alpha": a(x), "sigma": s(x), "dalpha": sp.diff(a(x), x), "dsigma": sp.diff(s(x), x),
             "snr": p01.snr_expr(x, a, s), "log_snr": sp.log(p01.snr_expr(x, a, s)),
             "dsnr": p01.dsnr_expr(x, a, s), "dlog_snr": p01.dlog_snr_expr(x, a, s)}
    fns = {k: sp.lambdify(x, v, "math") for k, v in exprs.items()}
    fns["t_of_log_snr"] = sp.lambdify(p01.lam, p01.t_of_log_snr_expr(name), "math")
    return fns


@functools.cache
def field_fns(name: str):
    a, s = p01.schedule(name)
    z, eh = sp.symbols("z ehat", real=True)
    args = (z, eh, p01.t)
    return tuple(sp.lambdify(args, f(z, eh, p01.t, a, s), "numpy")
                 for f in (p01.velocity_expr, p01.epsilon_expr, p01.score_expr))


@functools.cache
def step_fns(name: str):
    a, s = p01.schedule(name)
    mu, var = p03.step_posterior_expr(p03.e, a, s)
    args = (p03.z_t, p03.e, p03.ehat, p03.t, p03.s)
    return (sp.lambdify(args, mu, "numpy"), sp.lambdify(args, var, "numpy"),
            sp.lambdify(args, p03.step_kl_expr(a, s), "numpy"))


@functools.cache
def integrand_fn(name: str):
    a, s = p01.schedule(name)
    return sp.lambdify((p04.t, p04.v, p04.err2), p04.continuous_integrand_expr(a, s), "math")


@functools.cache
def ce_fns():
    probs = sp.lambdify(p10.logits, p10.probs_expr(), "math")
    bound = sp.lambdify((*p10.logits, p10.D), p10.ce_bound_expr(), "math")
    flat = [x for e in p10.E for x in e]
    err = sp.lambdify((*p10.p_sym, *flat), p10.sq_error_expr(), "math")
    return probs, bound, err


@functools.cache
def log_kernel_fns(name: str, V: int = 3, d: int = 2):
    """log q(z_s | z_t, e_v) for each v (isotropic: one p03 posterior per coordinate), lambdified."""
    a, s = p01.schedule(name)
    zt, zs = sp.symbols(f"zt0:{d}", real=True), sp.symbols(f"zs0:{d}", real=True)
    E = [sp.symbols(f"E{v}_0:{d}", real=True) for v in range(V)]
    args = (*zt, *zs, *itertools.chain(*E), p03.t, p03.s)
    fns = []
    for v in range(V):
        out = 0
        for k in range(d):
            mu, var = p03.step_posterior_expr(E[v][k], a, s)
            out += p07.log_gaussian(zs[k], mu.subs(p03.z_t, zt[k]), var)
        fns.append(sp.lambdify(args, out, "math"))
    return fns


schedule_names = st.sampled_from(NAMES)


@given(schedule_names, times)
def test_schedule_functions_match_the_sympy_derivatives(name, t):
    sch, fns = ef.get_schedule(name), schedule_fns(name)
    tt = _tensor(t)
    for key in ("alpha", "sigma", "dalpha", "dsigma", "snr", "log_snr", "dsnr", "dlog_snr"):
        _close(getattr(sch, key)(tt), fns[key](t))
    lam = fns["log_snr"](t)
    _close(sch.t_of_log_snr(_tensor(lam)), fns["t_of_log_snr"](lam))
    assert math.isclose(fns["t_of_log_snr"](lam), t, rel_tol=1e-9)


@given(schedule_names, times, times, vectors, vectors)
def test_velocity_epsilon_and_score_match_process(name, t1, t2, z, ehat):
    sch = ef.get_schedule(name)
    zz = torch.tensor([[z, z[::-1]]], dtype=F64)  # (1, 2, d): two tokens at their own times
    ee = torch.tensor([[ehat, ehat[::-1]]], dtype=F64)
    tau = _tensor([t1, t2])
    got = [fn(zz, ee, tau, sch) for fn in (process.velocity, process.epsilon, process.score)]
    for g, f in zip(got, field_fns(name), strict=True):
        for i, ti in enumerate((t1, t2)):
            _close(g[0, i], f(zz[0, i].numpy(), ee[0, i].numpy(), ti))


def _step_times(t, frac):
    return t, 0.005 + (t - 0.005) * frac  # 0.005 <= s < t, away from s == t


@given(schedule_names, times, st.floats(0.0, 0.9), vectors, vectors, vectors)
def test_step_posterior_and_gaussian_step_kl_match(name, t, frac, z, e, ehat):
    from evoflow.elbo import gaussian_step_kl

    sch = ef.get_schedule(name)
    t, s = _step_times(t, frac)
    zt, ee, eh = (torch.tensor([[v]], dtype=F64) for v in (z, e, ehat))  # (1, 1, d)
    tt, ss = _tensor([t]), _tensor([s])
    mu_fn, var_fn, kl_fn = step_fns(name)
    mu, var = process.step_posterior(zt, ee, tt, ss, sch)
    args = (zt[0, 0].numpy(), ee[0, 0].numpy(), eh[0, 0].numpy(), t, s)
    _close(mu[0, 0], mu_fn(*args), rtol=1e-8)
    _close(var[0, 0], var_fn(*args), rtol=1e-8)
    _close(gaussian_step_kl(ee, eh, tt, ss, sch)[0, 0], np.sum(kl_fn(*args)), rtol=1e-8)


@given(schedule_names, times, st.floats(-5.0, 0.0), vectors, vectors)
def test_continuous_integrand_matches(name, t, dt_ds, e, ehat):
    from evoflow.elbo import continuous_integrand

    ee, eh = (torch.tensor([[v]], dtype=F64) for v in (e, ehat))
    err2 = float(((ee - eh) ** 2).sum())
    got = continuous_integrand(ee, eh, _tensor([t]), _tensor([dt_ds]), ef.get_schedule(name))
    _close(got[0, 0], integrand_fn(name)(t, dt_ds, err2))
    assert float(got[0, 0]) >= 0.0


@given(st.lists(st.floats(-4.0, 4.0), min_size=3, max_size=3), st.integers(0, 2),
       st.lists(st.floats(-2.0, 2.0), min_size=6, max_size=6))
def test_ce_surrogate_matches_and_bounds_the_squared_error(logits, x, flat):
    from evoflow.elbo import ce_surrogate, embedding_diameter

    probs_fn, bound_fn, err_fn = ce_fns()
    emb = torch.tensor(flat, dtype=F64).reshape(3, 2)
    diam = max(math.dist(a, b) for a, b in itertools.combinations(emb.tolist(), 2))
    assert math.isclose(embedding_diameter(emb), diam, rel_tol=1e-12, abs_tol=1e-12)
    perm = [x] + [v for v in range(3) if v != x]  # the proof's true token is index 0
    got = ce_surrogate(torch.tensor([[logits]], dtype=F64), torch.tensor([[x]]), emb)
    _close(got[0, 0], bound_fn(*[logits[v] for v in perm], diam))
    p = probs_fn(*[logits[v] for v in perm])
    err = err_fn(*p, *emb[perm].flatten().tolist())
    assert err <= diam**2 * (1 - p[0]) + 1e-12 <= float(got[0, 0]) + 2e-12


@given(schedule_names, times, st.floats(0.0, 0.9), st.integers(0, 2), st.integers(0, 2**31 - 1))
def test_mixture_log_ratio_matches(name, t, frac, x, seed):
    from evoflow.kernels import mixture_log_ratio

    t, s = _step_times(t, frac)
    g = torch.Generator().manual_seed(seed)
    E, logits = torch.randn(3, 2, generator=g, dtype=F64), torch.randn(1, 1, 3, generator=g, dtype=F64)
    zt, zs = torch.randn(1, 1, 2, generator=g, dtype=F64), torch.randn(1, 1, 2, generator=g, dtype=F64)
    got = mixture_log_ratio(torch.tensor([[x]]), logits, zt, zs, _tensor([t]), _tensor([s]), ef.get_schedule(name), E)
    args = (*zt.flatten().tolist(), *zs.flatten().tolist(), *E.flatten().tolist(), t, s)
    log_k = torch.tensor([f(*args) for f in log_kernel_fns(name)], dtype=F64)  # (V,)
    log_w = torch.log_softmax(logits[0, 0], -1)  # p07 eq. (3): the mixture weights
    want = log_k[x] - torch.logsumexp(log_w + log_k, 0)
    _close(got[0, 0], want, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_the_bridge_can_fail(name):
    # the same comparison with the other schedule's expressions must not pass
    other = NAMES[(NAMES.index(name) + 1) % 3]
    sch = ef.get_schedule(name)
    assert not math.isclose(float(sch.dsnr(_tensor(0.3))), schedule_fns(other)["dsnr"](0.3), rel_tol=1e-3)


PROOFS = sorted((pathlib.Path(__file__).parents[1] / "proofs").glob("p[0-9][0-9]_*.md"))


def _check_test_references(text: str, root: pathlib.Path, where: str) -> int:
    refs = re.findall(r"((?:proofs|tests)/[\w/]+\.py)::(test_\w+)", text)
    for path, name in refs:
        assert f"def {name}(" in (root / path).read_text(), f"{where}: {path}::{name} does not exist"
    return len(refs)


@pytest.mark.parametrize("md", PROOFS, ids=lambda p: p.stem)
def test_proof_notes_point_at_existing_tests_and_symbols(md):
    text = md.read_text()
    labels = ("## Statement", "## Assumptions", "## Derivation", "Checked by:", "Implemented by:", "Numerical test")
    for label in labels:
        assert label in text, (md.name, label)
    assert md.with_suffix(".py").exists()
    assert _check_test_references(text, md.parents[1], md.name) >= 2
    implemented = text.split("Implemented by:")[1].split("Numerical test")[0]
    symbols = re.findall(r"`(evoflow(?:\.\w+)+)`", implemented)
    assert symbols, md.name
    for symbol in symbols:
        module, _, attr = symbol.rpartition(".")
        try:
            obj = importlib.import_module(symbol)
        except ImportError:
            obj = getattr(importlib.import_module(module), attr, None)
        assert obj is not None, f"{md.name}: {symbol} does not exist"


def test_proofs_index_lists_every_claim():
    readme = PROOFS[0].parent / "README.md"
    text = readme.read_text()
    for md in PROOFS:
        assert f"]({md.name})" in text, md.name
    assert _check_test_references(text, readme.parents[1], "README.md") >= len(PROOFS)
