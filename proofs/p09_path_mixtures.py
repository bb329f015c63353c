"""C9 (path mixtures): sampled-s estimators with the flux weight are unbiased for the path-averaged NELBO.

Statement and equations: proofs/p09_path_mixtures.md.
"""

import sympy as sp

s, u, b = sp.symbols("s u b", real=True)
c = sp.symbols("c0:4", real=True)
g_poly = sum(ci * s**i for i, ci in enumerate(c))  # a generic cubic integrand g(s)
g_exp = sp.exp(2 * s) * (1 + c[0] * s)  # a non-polynomial one


def continuous_term_expr(G, w):
    """int_0^1 G'(s) w(s) ds with G(s) = 1/2 SNR(t_i(s)): the per-token C4 term along one path, eq. (1)."""
    return sp.integrate(sp.diff(G, s) * w, (s, 0, 1))


def uniform_mean(f):
    """E_{s ~ U[0, 1]} f(s)."""
    return sp.integrate(f, (s, 0, 1))


def test_uniform_antithetic_stratified_importance_are_unbiased():
    for g in (g_poly, g_exp):
        target = sp.integrate(g, (s, 0, 1))
        assert sp.simplify(uniform_mean(g) - target) == 0  # eq. (2)
        assert sp.simplify(uniform_mean((g + g.subs(s, 1 - s)) / 2) - target) == 0  # antithetic, eq. (3)
        K = 3
        strata = sum(sp.integrate(g.subs(s, (k + u) / K), (u, 0, 1)) for k in range(K)) / K  # stratified, eq. (4)
        assert sp.simplify(strata - target) == 0
        q = 1 + b * (2 * s - 1)  # a density on [0, 1] for |b| < 1
        assert sp.simplify(sp.integrate(q, (s, 0, 1)) - 1) == 0
        assert sp.simplify(sp.integrate(q * (g / q), (s, 0, 1)) - target) == 0  # importance, eq. (5)
        biased = sp.integrate(q * g, (s, 0, 1))  # forgetting the 1/q weight biases it
        assert sp.simplify(biased - target) != 0


def test_flux_weight_makes_the_term_parametrisation_free():
    # with w depending on the path only through t_i, the C4 term is a Stieltjes integral in SNR, eq. (6)
    t = sp.Symbol("t", positive=True)
    snr = lambda x: (2 - x) ** 3  # noqa: E731  (a decreasing SNR)
    w = lambda x: 1 + c[2] * x + c[3] * x**2  # noqa: E731
    values = []
    for path in (1 - s, 1 - s**2, (1 - s) ** 3, 1 - sp.sin(sp.pi * s / 2)):  # four reparametrisations of 1 -> 0
        values.append(continuous_term_expr(snr(path) / 2, w(path)))
    direct = sp.integrate(-sp.diff(snr(t) / 2, t) * w(t), (t, 0, 1))
    assert all(sp.simplify(v - direct) == 0 for v in values)


def test_mixture_of_paths_is_the_average_of_their_terms():
    # a path drawn with probability pi_j, then s ~ U: E[weighted integrand] = sum_j pi_j NELBO_j, eq. (7)
    p = sp.Symbol("pi", positive=True)
    G1, G2 = s**2 + 2 * s, 3 * s  # 1/2 SNR(t_i(s)) along two paths
    w = 1 + c[1] * s  # E ||e - ehat||^2 along them (the same function for brevity)
    estimator_mean = p * uniform_mean(sp.diff(G1, s) * w) + (1 - p) * uniform_mean(sp.diff(G2, s) * w)
    average = p * continuous_term_expr(G1, w) + (1 - p) * continuous_term_expr(G2, w)
    assert sp.simplify(estimator_mean - average) == 0
    plain = uniform_mean(w)  # weight 1 instead of the flux G'(s): a different number
    assert sp.simplify(plain - average) != 0


def test_independent_times_average_axis_parallel_segments():
    # E_{t1, t2 ~ U} sum_i (-S'(t_i)) w_i(t1, t2) = sum_i E_{t_j} [segment integral of token i with t_j frozen], eq. (8)
    t1, t2 = sp.symbols("t1 t2", positive=True)
    S = lambda x: (2 - x) ** 3  # noqa: E731
    w1, w2 = 1 + t1 * t2, 2 - t2 + t1**2  # any per-token E||e - ehat||^2 as functions of (t1, t2)
    lhs = sp.integrate(-sp.diff(S(t1), t1) * w1 - sp.diff(S(t2), t2) * w2, (t1, 0, 1), (t2, 0, 1))
    seg1 = sp.integrate(-sp.diff(S(t1), t1) * w1, (t1, 0, 1))  # token 1 goes 1 -> 0 while token 2 sits at t2
    seg2 = sp.integrate(-sp.diff(S(t2), t2) * w2, (t2, 0, 1))
    assert sp.simplify(lhs - sp.integrate(seg1, (t2, 0, 1)) - sp.integrate(seg2, (t1, 0, 1))) == 0
    assert seg1.subs(t2, 1) != seg1.subs(t2, sp.Rational(1, 2))  # where the frozen token sits matters
