"""C4 (continuous limit): the step term of C3 is h times the continuous integrand plus O(h^2); O(1/K) in total.

Statement and equations: proofs/p04_continuous_limit.md.
"""

import sympy as sp

ALPHA = sp.Function("alpha", positive=True)
SIGMA = sp.Function("sigma", positive=True)
SNR = sp.Function("SNR")  # any smooth SNR(t); for a schedule SNR = alpha^2 / sigma^2
T = sp.Function("T")  # a path component s -> t_i(s)
W = sp.Function("w")  # s -> E ||e - ehat(z, tau(s))||^2 (ehat taken at the start of the step)
t, s, h, K = sp.symbols("t s h K", positive=True)
v = sp.Symbol("v", nonpositive=True)  # dt_i/ds along a decoding path
err2 = sp.Symbol("err2", nonnegative=True)  # ||e - ehat||^2


def step_term_expr(snr, t_from, t_to, err2):
    """The C3 step term 1/2 (SNR(t_to) - SNR(t_from)) ||e - ehat||^2, eq. (1)."""
    return (snr(t_to) - snr(t_from)) * err2 / 2


def continuous_integrand_expr(alpha=ALPHA, sigma=SIGMA):
    """Coefficient of h in the series of the step term from t to t + v h, eq. (3): the integrand of NELBO_inf.

    The series is taken with a generic SNR, then SNR = alpha^2 / sigma^2 of the schedule is substituted.
    """
    step = step_term_expr(SNR, t, t + v * h, err2)
    first = sp.series(step, h, 0, 2).removeO().coeff(h, 1)
    x = sp.Dummy("x")
    return first.subs(SNR, sp.Lambda(x, alpha(x) ** 2 / sigma(x) ** 2)).doit()


def test_step_term_series_along_a_generic_path():
    step = step_term_expr(SNR, T(s), T(s + h), W(s))  # one grid step s -> s + h of a smooth path
    ser = sp.series(step, h, 0, 3).removeO().doit()
    first, second = ser.coeff(h, 1), ser.coeff(h, 2)  # eq. (2)
    assert sp.simplify(first - sp.diff(SNR(T(s)), s) * W(s) / 2) == 0
    assert second != 0 and second.has(sp.Derivative(T(s), (s, 2)))  # a genuine O(h^2) remainder
    assert ser.coeff(h, 0) == 0


def test_integrand_is_the_flux_weight_of_c9_and_is_nonnegative():
    snr = ALPHA(t) ** 2 / SIGMA(t) ** 2
    target = (-sp.diff(snr, t)) * (-v) * err2 / 2  # eq. (3)
    assert sp.simplify(continuous_integrand_expr() - target) == 0
    d = sp.Symbol("dsnr", nonpositive=True)  # SNR' <= 0 (p01, eq. 9) and v <= 0 along decoding
    assert (d * v * err2 / 2).is_nonnegative


def test_time_step_series():
    step = step_term_expr(SNR, t, t - h, W(t))  # a step t -> s = t - h in the time itself
    lead = sp.series(step, h, 0, 2).removeO().doit()
    assert sp.simplify(lead - (-sp.diff(SNR(t), t)) * h * W(t) / 2) == 0


def test_riemann_sum_error_is_order_one_over_k():
    k = sp.Symbol("k", integer=True, nonnegative=True)
    x = sp.Symbol("x")
    g1, g2, w0, w1, w2 = sp.symbols("g1 g2 w0 w1 w2", real=True)
    G = lambda y: g1 * y + g2 * y**2  # noqa: E731  (1/2 SNR(t(s)), polynomial to keep sums closed-form)
    w = lambda y: w0 + w1 * y + w2 * y**2  # noqa: E731
    grid_sum = sp.summation((G((k + 1) / K) - G(k / K)) * w(k / K), (k, 0, K - 1))  # eq. (4)
    integral = sp.integrate(sp.diff(G(x), x) * w(x), (x, 0, 1))
    err = sp.simplify(grid_sum - integral)
    constant = sp.limit(K * err, K, sp.oo)  # eq. (5)
    assert sp.simplify(constant + sp.integrate(sp.diff(G(x), x) * sp.diff(w(x), x), (x, 0, 1)) / 2) == 0
    assert constant.subs({g1: 1, g2: 1, w0: 1, w1: 1, w2: 1}) != 0  # the rate is exactly 1/K, not faster
    assert sp.limit(err.subs({w1: 0, w2: 0}), K, sp.oo) == 0 and err.subs({w1: 0, w2: 0}) == 0  # frozen ehat: exact
