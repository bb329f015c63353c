"""C6 (tightness, path independence): on two jointly Gaussian tokens the 1-form sum_i mmse_i dsnr_i / 2 is exact.

Statement and equations: proofs/p06_tightness.md.
"""

import sympy as sp

s1, s2, lam = sp.symbols("snr1 snr2 lambda", nonnegative=True)
rho = sp.Symbol("rho", real=True)  # |rho| < 1
SNRS = (s1, s2)


def prior_covariance():
    """Sigma = [[1, rho], [rho, 1]]: x = (x_1, x_2) ~ N(0, Sigma), one scalar per token."""
    return sp.Matrix([[1, rho], [rho, 1]])


def mmse_expr():
    """(mmse_1, mmse_2): diagonal of (Sigma^-1 + diag(snr))^-1 for y_i = sqrt(snr_i) x_i + n_i, eq. (1)."""
    post = (prior_covariance().inv() + sp.diag(s1, s2)).inv()
    return [sp.simplify(post[0, 0]), sp.simplify(post[1, 1])]


def mutual_information_expr():
    """I(x; y) = 1/2 log det(I + D Sigma D), D = diag(sqrt snr), eq. (2)."""
    D = sp.diag(sp.sqrt(s1), sp.sqrt(s2))
    return sp.log((sp.eye(2) + D * prior_covariance() * D).det()) / 2


def line_integral(path, end, values):
    """int_0^1 sum_i mmse_i(path(l)) / 2 dsnr_i(l)/dl dl along l -> path(l) (snr(0) = 0, snr(1) = end), eq. (4)."""
    m = [x.subs(values) for x in mmse_expr()]
    pts = path(lam, end)
    integrand = sum(m[i].subs({s1: pts[0], s2: pts[1]}) * sp.diff(pts[i], lam) / 2 for i in range(2))
    return sp.integrate(sp.cancel(integrand), (lam, 0, 1))


def test_one_form_is_closed():
    m1, m2 = mmse_expr()
    assert sp.simplify(sp.diff(m1, s2) - sp.diff(m2, s1)) == 0  # eq. (3)
    assert sp.simplify(sp.diff(m1, s2)) != 0  # the tokens do interact (rho != 0)


def test_vector_i_mmse():
    info = mutual_information_expr()
    for snr, m in zip(SNRS, mmse_expr(), strict=True):
        assert sp.simplify(sp.diff(info, snr) - m / 2) == 0  # eq. (2)


def test_line_integrals_along_different_paths_equal_the_information():
    paths = {  # l in [0, 1] -> (snr_1, snr_2): AR-like corner paths, the diagonal, a curved path
        "token 1 first": lambda x, e: (e[0] * sp.Min(2 * x, 1), e[1] * sp.Max(2 * x - 1, 0)),
        "token 2 first": lambda x, e: (e[0] * sp.Max(2 * x - 1, 0), e[1] * sp.Min(2 * x, 1)),
        "diagonal": lambda x, e: (e[0] * x, e[1] * x),
        "curved": lambda x, e: (e[0] * x**2, e[1] * x),
    }
    for r in (sp.Rational(-3, 5),):
        end = (sp.Integer(2), sp.Integer(3))
        info = mutual_information_expr().subs(rho, r)
        target = info.subs({s1: end[0], s2: end[1]}) - info.subs({s1: 0, s2: 0})  # eq. (5)
        for name, path in paths.items():
            got = line_integral(path, end, {rho: r})
            assert sp.simplify(sp.expand_log(got - target, force=True)) == 0, (name, r)
        indep = mutual_information_expr().subs({rho: 0, s1: end[0], s2: end[1]})  # the check can fail
        assert sp.simplify(target - indep) != 0
