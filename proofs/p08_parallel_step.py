"""C8 (parallel-step error): the factorised kernel is inexact when tokens move together; K = 1 gives marginals.

Two tokens, binary vocabulary, symbolic joint p(x). Statement and equations: proofs/p08_parallel_step.md.
"""

import sympy as sp

P = {(a, b): sp.Symbol(f"p{a}{b}", positive=True) for a in range(2) for b in range(2)}  # p(x1 = a, x2 = b)
NORMALISED = {P[1, 1]: 1 - P[0, 0] - P[0, 1] - P[1, 0]}
pos = dict(positive=True)


def marginal_expr(i, v):
    """p(x_i = v), summed from the joint."""
    return sum(w for k, w in P.items() if k[i] == v)


def total_correlation_expr():
    """TC = sum_x p(x) log(p(x) / (p_1(x_1) p_2(x_2))), eq. (4)."""
    return sum(w * sp.log(w / (marginal_expr(0, a) * marginal_expr(1, b))) for (a, b), w in P.items())


def synchronous_one_step_gap_expr():
    """E_x[sum_i -log p_i(x_i)] - E_x[-log p(x)]: the K = 1 NELBO (t_min -> 0) minus the NLL, eq. (3)."""
    return sum(w * (-sp.log(marginal_expr(0, a)) - sp.log(marginal_expr(1, b)) + sp.log(w)) for (a, b), w in P.items())


def test_posterior_at_the_noise_end_is_the_prior():
    z1, z2 = sp.symbols("z1 z2", real=True)
    g, e0, e1 = sp.Symbol("sigma1", **pos), sp.Symbol("e0", real=True), sp.Symbol("e1", real=True)
    e = (e0, e1)
    alpha1 = 0  # alpha(1) = 0: every emission is N(0, sigma(1)^2) whatever the token

    def q(z, v):
        return sp.exp(-((z - alpha1 * e[v]) ** 2) / (2 * g**2)) / sp.sqrt(2 * sp.pi * g**2)

    norm = sum(w * q(z1, a) * q(z2, b) for (a, b), w in P.items())
    for (a, b), w in P.items():  # p(x | z) = p(x) / sum p = p(x), eq. (1)
        assert sp.simplify(w * q(z1, a) * q(z2, b) / norm - w / sum(P.values())) == 0


def test_factorised_kernel_is_not_exact_when_both_tokens_move():
    K1, K2 = sp.symbols("K1_0:2", **pos), sp.symbols("K2_0:2", **pos)  # q(z_s^i | z_t^i, e_v)
    post = {k: sp.Symbol(f"r{k[0]}{k[1]}", **pos) for k in P}  # exact joint posterior p(x | z_t)
    true = sum(post[a, b] * K1[a] * K2[b] for a, b in P)  # after the Bayes identity of p07, eq. (2)
    pi1 = [sum(post[v, b] for b in range(2)) for v in range(2)]
    pi2 = [sum(post[a, v] for a in range(2)) for v in range(2)]
    factorised = (pi1[0] * K1[0] + pi1[1] * K1[1]) * (pi2[0] * K2[0] + pi2[1] * K2[1])
    norm = {post[1, 1]: 1 - post[0, 0] - post[0, 1] - post[1, 0]}
    assert sp.expand((true - factorised).subs(norm)) != 0
    u, w = sp.symbols("u w", **pos)  # a posterior that factorises makes the kernel exact
    indep = {post[a, b]: (u if a == 0 else 1 - u) * (w if b == 0 else 1 - w) for a, b in P}
    assert sp.expand((true - factorised).subs(indep)) == 0


def test_one_step_gap_is_the_total_correlation():
    gap = synchronous_one_step_gap_expr().subs(NORMALISED)
    tc = total_correlation_expr().subs(NORMALISED)
    assert sp.simplify(sp.expand_log(gap - tc, force=True)) == 0
    H = lambda dist: -sum(q * sp.log(q) for q in dist)  # noqa: E731
    entropy_form = H([marginal_expr(0, v) for v in (0, 1)]) + H([marginal_expr(1, v) for v in (0, 1)]) - H(P.values())
    assert sp.simplify(sp.expand_log(tc - entropy_form.subs(NORMALISED), force=True)) == 0  # eq. (5)


def test_total_correlation_vanishes_exactly_for_independent_tokens():
    u, w = sp.symbols("u w", **pos)
    indep = {P[a, b]: (u if a == 0 else 1 - u) * (w if b == 0 else 1 - w) for a, b in P}
    assert sp.simplify(sp.expand_log(total_correlation_expr().subs(indep), force=True)) == 0
    correlated = {P[0, 0]: sp.Rational(2, 5), P[1, 1]: sp.Rational(2, 5), P[0, 1]: sp.Rational(1, 10),
                  P[1, 0]: sp.Rational(1, 10)}
    assert total_correlation_expr().subs(correlated).evalf() > 0
