"""C11 (exact likelihood): d/dt log p_t(z(t)) = -div u along the flow; closed form on 1-D Gaussian data.

Statement and equations: proofs/p11_exact_likelihood.md.
"""

import sympy as sp

ALPHA = sp.Function("alpha", positive=True)
SIGMA = sp.Function("sigma", positive=True)
t, t0, t1, vx = sp.symbols("t t0 t1 v", positive=True)  # 0 < t0 < t1 <= 1; v = Var(x) of the data
z, z0 = sp.symbols("z z0", real=True)


def velocity_expr(zz, ehat, alpha=ALPHA, sigma=SIGMA):
    """u of THEORY section 3 at time t (as in p01)."""
    a, s = alpha(t), sigma(t)
    return sp.diff(s, t) / s * zz + (sp.diff(a, t) - a * sp.diff(s, t) / s) * ehat


def gaussian_data_model(alpha=ALPHA, sigma=SIGMA):
    """x ~ N(0, v): p_t = N(0, c(t)), c = alpha^2 v + sigma^2, ehat = alpha v z / c, eq. (2)."""
    c = alpha(t) ** 2 * vx + sigma(t) ** 2
    return c, alpha(t) * vx * z / c


def log_density_expr(zz, at, alpha=ALPHA, sigma=SIGMA):
    """log p_t(z) for the Gaussian data model, at time ``at``."""
    c = gaussian_data_model(alpha, sigma)[0].subs(t, at)
    return -(zz**2) / (2 * c) - sp.log(2 * sp.pi * c) / 2


def flow_rate_expr(alpha=ALPHA, sigma=SIGMA):
    """k(t) with u = k z (the field is linear in z on Gaussian data); div u = k, eq. (3)."""
    _, ehat = gaussian_data_model(alpha, sigma)
    return sp.cancel(velocity_expr(z, ehat, alpha, sigma) / z)


def test_instantaneous_change_of_variables_on_a_mixture():
    e0, e1 = sp.symbols("e0 e1", real=True)
    w = sp.Symbol("w", positive=True)  # p(x = e0) = w, p(x = e1) = 1 - w: non-Gaussian data

    def q(m):
        return sp.exp(-((z - ALPHA(t) * m) ** 2) / (2 * SIGMA(t) ** 2)) / (sp.sqrt(2 * sp.pi) * SIGMA(t))

    p = w * q(e0) + (1 - w) * q(e1)
    ehat = (w * q(e0) * e0 + (1 - w) * q(e1) * e1) / p
    u = velocity_expr(z, ehat)
    total = (sp.diff(p, t) + u * sp.diff(p, z)) / p  # d/dt log p(z(t), t) along dz/dt = u, eq. (1)
    residual = total + sp.diff(u, z)
    opaque = {a: sp.Dummy(positive=True) for a in residual.atoms(sp.exp)}
    assert sp.cancel(sp.together(residual.xreplace(opaque))) == 0
    assert sp.cancel(sp.together((total - sp.diff(u, z)).xreplace(opaque))) != 0  # the sign matters


def test_flow_and_divergence_integral_in_closed_form():
    k = flow_rate_expr()
    K = sp.integrate(k, t)  # antiderivative of div u, eq. (4)
    assert sp.simplify(sp.diff(K, t) - k) == 0
    z_of_t = z0 * sp.exp(K - K.subs(t, t0))  # the ODE solution through z0 at t0, eq. (5)
    assert sp.simplify(sp.diff(z_of_t, t) - k * z_of_t) == 0
    div_integral = K.subs(t, t1) - K.subs(t, t0)
    lhs = log_density_expr(z0, t0)  # C11, eq. (6): log p_{t0}(z0) = log p_{t1}(z(t1)) + int_{t0}^{t1} div u dt
    rhs = log_density_expr(z_of_t.subs(t, t1), t1) + div_integral
    assert sp.simplify(sp.expand_log(lhs - rhs, force=True)) == 0
    wrong = log_density_expr(z_of_t.subs(t, t1), t1) - div_integral
    assert sp.simplify(sp.expand_log(lhs - wrong, force=True)) != 0


def test_linear_schedule_flow_by_dsolve():
    f = sp.Function("f")
    lin_a, lin_s = (lambda x: 1 - x), (lambda x: x)
    sol = sp.dsolve(sp.Eq(f(t).diff(t), flow_rate_expr(lin_a, lin_s) * f(t)), f(t)).rhs  # eq. (7)
    c, _ = gaussian_data_model(lin_a, lin_s)
    ratio = sp.simplify(sol**2 / c)  # z(t)^2 / c(t) is constant: z(t) ~ N(0, c(t)) when z(t0) ~ N(0, c(t0))
    assert sp.diff(ratio, t) == 0
