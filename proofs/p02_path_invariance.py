"""C2 (path invariance): dz/ds = sum_i u_i dt_i/ds carries p_tau(0) to p_tau(s) along every path.

Checked on two jointly Gaussian scalar tokens (correlation rho), generic alpha, sigma and a
generic path velocity (v1, v2) = d tau / ds. Statement and equations: proofs/p02_path_invariance.md.
"""

import sympy as sp

ALPHA = sp.Function("alpha", positive=True)
SIGMA = sp.Function("sigma", positive=True)
t1, t2 = sp.symbols("t1 t2", positive=True)
v1, v2 = sp.symbols("v1 v2", real=True)  # dt_i/ds at the current point of the path (any path)
rho = sp.Symbol("rho", real=True)
z = sp.Matrix(sp.symbols("z1 z2", real=True))
TIMES, SPEEDS = (t1, t2), (v1, v2)


def covariance_expr(alpha=ALPHA, sigma=SIGMA):
    """C_tau = A Sigma A + S^2, the covariance of p_tau for x ~ N(0, [[1, rho], [rho, 1]]), eq. (2)."""
    Sig = sp.Matrix([[1, rho], [rho, 1]])
    A = sp.diag(*(alpha(x) for x in TIMES))
    S = sp.diag(*(sigma(x) for x in TIMES))
    return A * Sig * A + S**2


def velocity_matrix_expr(alpha=ALPHA, sigma=SIGMA):
    """M with u = M z: u_i of THEORY section 3 with the exact ehat = Sigma A C^-1 z, eq. (3)."""
    Sig = sp.Matrix([[1, rho], [rho, 1]])
    A = sp.diag(*(alpha(x) for x in TIMES))
    C = covariance_expr(alpha, sigma)
    H = Sig * A * C.inv()  # ehat = H z
    rows = []
    for i, x in enumerate(TIMES):
        a, s = alpha(x), sigma(x)
        ds, da = sp.diff(s, x), sp.diff(a, x)
        rows.append(ds / s * sp.eye(2)[i, :] + (da - a * ds / s) * H[i, :])
    return sp.Matrix.vstack(*rows)


def path_derivative(expr):
    """d/ds along the path: the chain rule sum_i (dt_i/ds) d/dt_i, eq. (1)."""
    d1, d2 = (v * sp.diff(expr, x) for x, v in zip(TIMES, SPEEDS, strict=True))
    return d1 + d2


def flow_field_expr(alpha=ALPHA, sigma=SIGMA):
    """f = sum_i u_i dt_i/ds = diag(v) M z (token i moves only while t_i moves), eq. (4)."""
    return sp.diag(v1, v2) * velocity_matrix_expr(alpha, sigma) * z


def density_expr(alpha=ALPHA, sigma=SIGMA):
    """p_tau(z) = N(z; 0, C_tau), eq. (2)."""
    C = covariance_expr(alpha, sigma)
    return sp.exp(-(z.T * C.inv() * z)[0] / 2) / (2 * sp.pi * sp.sqrt(C.det()))


def _zero(expr):
    return sp.cancel(sp.together(expr.xreplace({a: sp.Dummy(positive=True) for a in expr.atoms(sp.exp)}))) == 0


def test_covariance_obeys_the_lyapunov_equation_of_the_flow_along_any_path():
    C = covariance_expr()
    F = sp.diag(v1, v2) * velocity_matrix_expr()  # dz/ds = F z
    residual = path_derivative(C) - (F * C + C * F.T)  # eq. (5)
    assert residual.applyfunc(lambda x: sp.cancel(sp.together(x))) == sp.zeros(2, 2)


def test_density_obeys_the_continuity_equation_of_the_path_ode():
    p, f = density_expr(), flow_field_expr()
    flux = [sp.diff(p * f[i], z[i]) for i in range(2)]
    assert _zero(path_derivative(p) + flux[0] + flux[1])  # eq. (6)
    assert not _zero(flux[1])  # so dropping token 2's flux would break it


def test_flow_maps_differ_between_paths_although_the_densities_agree():
    M = velocity_matrix_expr()
    F1, F2 = M.copy(), M.copy()
    F1[1, :] = sp.zeros(1, 2)  # dz/dt1 = F1 z: only token 1 moves
    F2[0, :] = sp.zeros(1, 2)  # dz/dt2 = F2 z: only token 2 moves
    curvature = sp.diff(F2, t1) - sp.diff(F1, t2) + F2 * F1 - F1 * F2  # eq. (7)
    curvature = curvature.applyfunc(lambda x: sp.cancel(sp.together(x)))
    assert curvature != sp.zeros(2, 2)
    assert curvature.subs(rho, 0).applyfunc(sp.simplify) == sp.zeros(2, 2)
