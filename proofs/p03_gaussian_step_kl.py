"""C3 (Gaussian step KL): KL(q(z_s|z_t,e) || q(z_s|z_t,ehat)) = 1/2 (SNR(s) - SNR(t)) (e - ehat)^2 per dimension.

The step posterior of THEORY section 2 is re-derived by completing the square, then the KL is
taken from the general Gaussian formula. Statement and equations: proofs/p03_gaussian_step_kl.md.
"""

import sympy as sp

ALPHA = sp.Function("alpha", positive=True)
SIGMA = sp.Function("sigma", positive=True)
t, s = sp.symbols("t s", positive=True)  # 0 < s < t < 1
z_t, z_s, e, ehat = sp.symbols("z_t z_s e ehat", real=True)


def transition(alpha=ALPHA, sigma=SIGMA):
    """alpha_{t|s} and sigma_{t|s}^2 of the forward kernel q(z_t | z_s) = N(alpha_{t|s} z_s, sigma_{t|s}^2), eq. (1)."""
    a_ts = alpha(t) / alpha(s)
    return a_ts, sigma(t) ** 2 - a_ts**2 * sigma(s) ** 2


def step_posterior_expr(x=e, alpha=ALPHA, sigma=SIGMA):
    """(mu, sig2) of q(z_s | z_t, x) as written in THEORY section 2, eq. (3)."""
    a_ts, v_ts = transition(alpha, sigma)
    mu = a_ts * sigma(s) ** 2 / sigma(t) ** 2 * z_t + alpha(s) * v_ts / sigma(t) ** 2 * x
    return mu, v_ts * sigma(s) ** 2 / sigma(t) ** 2


def bayes_posterior_expr(alpha=ALPHA, sigma=SIGMA):
    """(mu, sig2) derived from q(z_s | e) q(z_t | z_s) by completing the square in z_s, eq. (2)."""
    a_ts, v_ts = transition(alpha, sigma)
    log_joint = -((z_s - alpha(s) * e) ** 2) / (2 * sigma(s) ** 2) - (z_t - a_ts * z_s) ** 2 / (2 * v_ts)
    poly = sp.Poly(sp.expand(log_joint), z_s)
    precision = -2 * poly.coeff_monomial(z_s**2)
    return poly.coeff_monomial(z_s) / precision, 1 / precision


def gaussian_kl(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)) in one dimension, eq. (4)."""
    return (sp.log(v2 / v1) + v1 / v2 - 1 + (m1 - m2) ** 2 / v2) / 2


def step_kl_expr(alpha=ALPHA, sigma=SIGMA):
    """The step KL per dimension, from eq. (4) with the posteriors of eq. (3) (not the simplified form)."""
    m1, v1 = step_posterior_expr(e, alpha, sigma)
    m2, v2 = step_posterior_expr(ehat, alpha, sigma)
    return gaussian_kl(m1, v1, m2, v2)


def test_forward_kernel_composes_to_the_marginal():
    a_ts, v_ts = transition()
    # z_t = a_ts z_s + noise: mean a_ts alpha_s e = alpha_t e, variance a_ts^2 sigma_s^2 + v_ts = sigma_t^2
    assert sp.simplify(a_ts * ALPHA(s) - ALPHA(t)) == 0
    assert sp.simplify(a_ts**2 * SIGMA(s) ** 2 + v_ts - SIGMA(t) ** 2) == 0


def test_step_posterior_of_theory_is_bayes_rule():
    mu_b, var_b = bayes_posterior_expr()
    mu, var = step_posterior_expr()
    assert sp.simplify(mu_b - mu) == 0
    assert sp.simplify(var_b - var) == 0


def test_step_kl_is_half_snr_gap_times_squared_error():
    kl = step_kl_expr()
    snr = lambda x: ALPHA(x) ** 2 / SIGMA(x) ** 2  # noqa: E731
    target = (snr(s) - snr(t)) * (e - ehat) ** 2 / 2  # eq. (5)
    assert sp.simplify(kl - target) == 0
    assert sp.diff(sp.simplify(kl), z_t) == 0  # the KL does not depend on z_t
    assert sp.simplify(kl - (snr(t) - snr(s)) * (e - ehat) ** 2 / 2) != 0  # the sign matters


def test_isotropic_kl_in_d_dimensions_sums_the_squared_error():
    d = 2  # the multivariate formula, eq. (6), with covariance sig2 I for both posteriors
    es, hs, zs = (sp.Matrix(sp.symbols(f"{n}0:{d}", real=True)) for n in ("e", "h", "z"))
    m1, v = (sp.Matrix([step_posterior_expr(es[k])[0].subs(z_t, zs[k]) for k in range(d)]), step_posterior_expr()[1])
    m2 = sp.Matrix([step_posterior_expr(hs[k])[0].subs(z_t, zs[k]) for k in range(d)])
    S1 = S2 = v * sp.eye(d)
    kl = ((S2.inv() * S1).trace() + ((m2 - m1).T * S2.inv() * (m2 - m1))[0] - d + sp.log(S2.det() / S1.det())) / 2
    snr = lambda x: ALPHA(x) ** 2 / SIGMA(x) ** 2  # noqa: E731
    assert sp.cancel(sp.together(kl - (snr(s) - snr(t)) * ((es - hs).T * (es - hs))[0] / 2)) == 0
