"""C1 (multi-time continuity): the per-token velocity of THEORY section 3 transports the Gaussian path.

Statement, assumptions and numbered equations: proofs/p01_continuity.md. Also the symbolic
schedules (linear, cosine, loglinear) that the bridge test compares with ``evoflow.schedules``.
"""

import sympy as sp

ALPHA = sp.Function("alpha", positive=True)  # generic schedule; 0 < t < 1 where alpha, sigma > 0
SIGMA = sp.Function("sigma", positive=True)
t, lam = sp.symbols("t lambda", real=True)


def schedule(name, gamma_min=-12, gamma_max=12):
    """``(alpha, sigma)`` of a THEORY section 2 schedule, as callables ``t -> sympy expression``."""
    if name == "linear":
        return (lambda x: 1 - x), (lambda x: x)
    if name == "cosine":
        return (lambda x: sp.cos(sp.pi * x / 2)), (lambda x: sp.sin(sp.pi * x / 2))
    if name == "loglinear":
        g = lambda x: gamma_max + (gamma_min - gamma_max) * x  # noqa: E731  (logSNR, linear in t)
        return (lambda x: sp.sqrt(1 / (1 + sp.exp(-g(x))))), (lambda x: sp.sqrt(1 / (1 + sp.exp(g(x)))))
    raise ValueError(name)


def snr_expr(x=t, alpha=ALPHA, sigma=SIGMA):
    """SNR = alpha^2 / sigma^2, eq. (8)."""
    return alpha(x) ** 2 / sigma(x) ** 2


def dsnr_expr(x=t, alpha=ALPHA, sigma=SIGMA):
    """d SNR / dt by differentiation, eq. (9)."""
    return sp.diff(snr_expr(x, alpha, sigma), x)


def dlog_snr_expr(x=t, alpha=ALPHA, sigma=SIGMA):
    """d logSNR / dt by differentiation, eq. (9)."""
    return sp.diff(sp.log(snr_expr(x, alpha, sigma)), x)


def t_of_log_snr_expr(name):
    """The time at which logSNR = lambda, solved by sympy (the schedule's ``t_of_log_snr``), eq. (10)."""
    a, s = schedule(name)
    x = sp.Symbol("x", positive=True)
    (sol,) = sp.solve(sp.Eq(sp.simplify(sp.log(a(x) / s(x))), lam / 2), x)  # a unique root: logSNR is monotone
    return sol


def gaussian(z, mean, var):
    """N(z; mean, var) in one dimension."""
    return sp.exp(-((z - mean) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)


def velocity_expr(z, ehat, x=t, alpha=ALPHA, sigma=SIGMA):
    """u = (sigma'/sigma) z + (alpha' - alpha sigma'/sigma) ehat, eq. (2) (THEORY section 3)."""
    a, s = alpha(x), sigma(x)
    return sp.diff(s, x) / s * z + (sp.diff(a, x) - a * sp.diff(s, x) / s) * ehat


def epsilon_expr(z, ehat, x=t, alpha=ALPHA, sigma=SIGMA):
    """epshat = (z - alpha ehat) / sigma, eq. (6)."""
    return (z - alpha(x) * ehat) / sigma(x)


def score_expr(z, ehat, x=t, alpha=ALPHA, sigma=SIGMA):
    """score = (alpha ehat - z) / sigma^2, eq. (5)."""
    return (alpha(x) * ehat - z) / sigma(x) ** 2


def _opaque(expr):
    """Replace every exp(...) by a fresh positive symbol (after differentiating: a polynomial identity)."""
    return expr.xreplace({a: sp.Dummy("E", positive=True) for a in expr.atoms(sp.exp)})


def _two_token_model():
    """p_tau(z1, z2) for two scalar tokens, binary vocabulary {e0, e1}, symbolic joint p(x), eq. (3)."""
    z1, z2, t1, t2 = sp.symbols("z1 z2 t1 t2", real=True)
    e = sp.symbols("e0 e1", real=True)
    P = {(a, b): sp.Symbol(f"p{a}{b}", positive=True) for a in range(2) for b in range(2)}

    def q(z, x, m):
        return gaussian(z, ALPHA(x) * m, SIGMA(x) ** 2)

    terms = {k: P[k] * q(z1, t1, e[k[0]]) * q(z2, t2, e[k[1]]) for k in P}
    p = sum(terms.values())
    ehat = [sum(w * e[k[i]] for k, w in terms.items()) / p for i in range(2)]
    return (z1, z2), (t1, t2), p, ehat


def test_conditional_gaussian_path_satisfies_the_1d_continuity_equation():
    z, e = sp.symbols("z e", real=True)
    p = gaussian(z, ALPHA(t) * e, SIGMA(t) ** 2)
    u = velocity_expr(z, e, t)  # the conditional velocity: ehat = e when x is known
    residual = (sp.diff(p, t) + sp.diff(p * u, z)) / p  # eq. (1)
    assert sp.simplify(residual) == 0


def test_multi_time_continuity_on_a_two_token_mixture():
    zs, ts, p, ehat = _two_token_model()
    for i in range(2):  # eq. (4): d p / d t_i = -d (p u_i) / d z_i, u_i from the posterior mean ehat_i
        u = velocity_expr(zs[i], ehat[i], ts[i])
        residual = sp.diff(p, ts[i]) + sp.diff(p * u, zs[i])
        assert sp.cancel(sp.together(_opaque(residual))) == 0
    # the velocity of the wrong token does not work (the check can fail)
    wrong = sp.diff(p, ts[0]) + sp.diff(p * velocity_expr(zs[0], ehat[1], ts[0]), zs[0])
    assert sp.cancel(sp.together(_opaque(wrong))) != 0


def test_tweedie_score_of_the_mixture():
    zs, ts, p, ehat = _two_token_model()
    for i in range(2):
        lhs = sp.diff(sp.log(p), zs[i])  # eq. (5)
        assert sp.cancel(sp.together(_opaque(lhs - score_expr(zs[i], ehat[i], ts[i])))) == 0


def test_velocity_in_noise_form_and_score_in_noise_form():
    z, eh = sp.symbols("z ehat", real=True)
    eps = epsilon_expr(z, eh)
    u_code = sp.diff(SIGMA(t), t) * eps + sp.diff(ALPHA(t), t) * eh  # the form of evoflow.process.velocity
    assert sp.simplify(u_code - velocity_expr(z, eh)) == 0  # eq. (7)
    assert sp.simplify(-eps / SIGMA(t) - score_expr(z, eh)) == 0  # eq. (6)
    a, s = schedule("linear")
    assert sp.simplify(velocity_expr(z, eh, t, a, s) - (z - eh) / t) == 0


def test_snr_derivative_forms_and_sign():
    da, ds = sp.diff(ALPHA(t), t), sp.diff(SIGMA(t), t)
    code_form = 2 * ALPHA(t) * (da * SIGMA(t) - ALPHA(t) * ds) / SIGMA(t) ** 3  # Schedule.dsnr
    assert sp.simplify(dsnr_expr() - code_form) == 0
    assert sp.simplify(dlog_snr_expr() - 2 * (da / ALPHA(t) - ds / SIGMA(t))) == 0
    A, B = sp.symbols("A B", nonnegative=True)  # alpha' = -A <= 0, sigma' = B >= 0
    assert code_form.subs({da: -A, ds: B}).is_nonpositive


def test_concrete_schedules():
    x = sp.Symbol("x", positive=True)
    for name in ("linear", "cosine"):
        a, s = schedule(name)
        assert a(1) == 0 and s(0) == 0  # eq. (11): exact prior, SNR(0) = inf
    for name in ("cosine", "loglinear"):
        a, s = schedule(name)
        assert sp.simplify(a(x) ** 2 + s(x) ** 2 - 1) == 0  # variance preserving
    a, s = schedule("loglinear", -5, 7)
    assert sp.simplify(sp.diff(sp.log(snr_expr(x, a, s)), x, 2)) == 0  # logSNR linear in t
    for name in ("linear", "cosine", "loglinear"):
        a, s = schedule(name)
        inv = t_of_log_snr_expr(name)
        assert sp.simplify(sp.log(snr_expr(inv, a, s)) - lam) == 0, name
