"""C5 (refinement helps): splitting a step changes the expected NELBO by sum_i 1/2 dSNR_i dmmse_i <= 0.

Statement and equations: proofs/p05_refinement.md.
"""

import sympy as sp

L = 3  # tokens in the symbolic check (any L works the same way: the sum is over tokens)


def _per_token(name, **assumptions):
    return sp.symbols(f"{name}0:{L}", **assumptions)


S_a, S_m, S_b = (_per_token(n, nonnegative=True) for n in ("Sa", "Sm", "Sb"))  # SNR(t_i) at a -> m -> b
M_a, M_m = (_per_token(n, nonnegative=True) for n in ("Ma", "Mm"))  # mmse_i(tau^a), mmse_i(tau^m)


def expected_step_expr(S_from, S_to, mmse_from):
    """E over data and z of the C3 step term with the Bayes-optimal ehat at the step's start, eq. (1)."""
    return sum((S_to[i] - S_from[i]) * mmse_from[i] / 2 for i in range(L))


def refinement_change_expr():
    """(split a -> m -> b) minus (one step a -> b), eq. (2)."""
    split = expected_step_expr(S_a, S_m, M_a) + expected_step_expr(S_m, S_b, M_m)
    return split - expected_step_expr(S_a, S_b, M_a)


def test_change_factors_as_snr_gap_times_mmse_gap():
    target = sum((S_b[i] - S_m[i]) * (M_m[i] - M_a[i]) / 2 for i in range(L))  # eq. (3)
    assert sp.expand(refinement_change_expr() - target) == 0
    assert sp.expand(refinement_change_expr() + target) != 0


def test_sign_from_monotone_snr_and_mmse():
    P = _per_token("P", nonnegative=True)  # SNR(t_b) - SNR(t_m) >= 0: SNR grows along decoding
    Q = _per_token("Q", nonnegative=True)  # mmse(tau^a) - mmse(tau^m) >= 0: eq. (4)
    change = refinement_change_expr().subs({S_b[i]: S_m[i] + P[i] for i in range(L)})
    change = sp.expand(change.subs({M_a[i]: M_m[i] + Q[i] for i in range(L)}))
    assert change.is_nonpositive  # eq. (5)
    assert change.subs({Q[0]: -1}).is_nonpositive is not True  # an MMSE that grew could raise the NELBO


def test_mmse_never_grows_with_any_snr_on_a_gaussian_model():
    s1, s2 = sp.symbols("snr1 snr2", nonnegative=True)
    rho = sp.Symbol("rho", real=True)
    post = (sp.Matrix([[1, rho], [rho, 1]]).inv() + sp.diag(s1, s2)).inv()  # posterior covariance
    mmse = [sp.simplify(post[0, 0]), sp.simplify(post[1, 1])]
    for i in range(2):
        for j, sj in enumerate((s1, s2)):  # d mmse_i / d snr_j = -(Cov_post)_ij^2 <= 0, eq. (6)
            assert sp.simplify(sp.diff(mmse[i], sj) + post[i, j] ** 2) == 0


def test_lower_snr_observation_is_a_degraded_copy():
    lo, hi = sp.symbols("snr_lo snr_hi", positive=True)
    c = sp.Symbol("c", positive=True)
    (coef,) = sp.solve(sp.Eq(c * sp.sqrt(hi), sp.sqrt(lo)), c)  # y_lo = c y_hi + extra noise, eq. (7)
    extra = sp.simplify(1 - coef**2)  # variance of the extra noise needed for unit total noise variance
    assert sp.simplify(extra - (hi - lo) / hi) == 0
    assert extra.subs(lo, hi / 2).is_positive and extra.subs(lo, 2 * hi).is_negative
