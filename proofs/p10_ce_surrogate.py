"""C10 (CE surrogate): ||e_x - ehat||^2 <= D^2 (1 - p_x) <= D^2 (-log p_x).

Three tokens in the vocabulary, embeddings in the plane. Statement and equations:
proofs/p10_ce_surrogate.md.
"""

import sympy as sp

V, DIM = 3, 2
E = [sp.Matrix(sp.symbols(f"e{v}_0:{DIM}", real=True)) for v in range(V)]
logits = sp.symbols(f"l0:{V}", real=True)
D = sp.Symbol("D", positive=True)  # the largest distance between two embeddings
p_sym = sp.symbols(f"p0:{V}", nonnegative=True)
X = 0  # the true token (any index works the same way)


def probs_expr():
    """p_v = softmax(logits)_v."""
    z = sum(sp.exp(x) for x in logits)
    return [sp.exp(x) / z for x in logits]


def ehat_expr(p=p_sym):
    """ehat = sum_v p_v e_v."""
    return sum((p[v] * E[v] for v in range(V)), sp.zeros(DIM, 1))


def sq_error_expr(x=X, p=p_sym):
    """||e_x - ehat||^2, eq. (1)."""
    r = E[x] - ehat_expr(p)
    return (r.T * r)[0]


def ce_bound_expr(x=X):
    """D^2 (-log p_x) with p from the logits: the surrogate of ``evoflow.elbo.ce_surrogate``, eq. (5)."""
    return D**2 * -sp.log(probs_expr()[x])


def test_error_is_a_weighted_sum_of_differences():
    simplex = {p_sym[X]: 1 - sum(p_sym[v] for v in range(V) if v != X)}
    lhs = (E[X] - ehat_expr()).subs(simplex)
    rhs = sum((p_sym[v] * (E[X] - E[v]) for v in range(V) if v != X), sp.zeros(DIM, 1))  # eq. (2)
    assert (lhs - rhs).applyfunc(sp.expand) == sp.zeros(DIM, 1)


def test_jensen_gap_is_a_weighted_variance():
    simplex = {p_sym[X]: 1 - sum(p_sym[v] for v in range(V) if v != X)}
    mean_sq = sum(p_sym[v] * ((E[X] - E[v]).T * (E[X] - E[v]))[0] for v in range(V))
    spread = sum(p_sym[v] * ((E[v] - ehat_expr()).T * (E[v] - ehat_expr()))[0] for v in range(V))
    gap = (mean_sq - sq_error_expr()).subs(simplex)  # eq. (3): sum_v p_v ||e_x - e_v||^2 - ||e_x - ehat||^2
    assert sp.expand(gap - spread.subs(simplex)) == 0  # a weighted sum of squares, hence >= 0


def test_diameter_bound_step():
    slack = sp.symbols(f"r0:{V}", nonnegative=True)  # ||e_x - e_v||^2 = D^2 - r_v with r_v >= 0
    mean_sq = sum(p_sym[v] * (D**2 - slack[v]) for v in range(V) if v != X)  # eq. (4)
    bound = D**2 * (1 - p_sym[X])
    simplex = {p_sym[X]: 1 - sum(p_sym[v] for v in range(V) if v != X)}
    assert sp.expand((bound - mean_sq).subs(simplex)).is_nonnegative
    assert sp.expand((bound - mean_sq.subs(slack[1], -1)).subs(simplex)).is_nonnegative is not True  # needs <= D


def test_one_minus_p_is_at_most_minus_log_p():
    p = sp.Symbol("p", positive=True)
    f = -sp.log(p) - (1 - p)  # eq. (6)
    assert f.subs(p, 1) == 0
    df = sp.diff(f, p)
    assert sp.solve(sp.Eq(df, 0), p) == [1]  # the only stationary point
    q = sp.Symbol("q", nonnegative=True)  # p = 1 / (1 + q) covers (0, 1]
    assert sp.simplify(df.subs(p, 1 / (1 + q))).is_nonpositive  # f decreases on (0, 1], so f >= f(1) = 0
    assert sp.simplify(df.subs(p, 2)).is_positive  # (and not beyond 1: the domain matters)


def test_softmax_bound_chain_at_rational_points():
    for vals in ([0, 1, -2], [3, 0, 0], [-1, -1, 2]):
        sub = dict(zip(logits, vals, strict=True))
        p = [x.subs(sub) for x in probs_expr()]
        pts = {sym: val for v, val in enumerate(([0, 0], [3, 4], [1, -1])) for sym, val in zip(E[v], val, strict=True)}
        diam2 = max(((E[a] - E[b]).T * (E[a] - E[b]))[0].subs(pts) for a in range(V) for b in range(V))
        err = sq_error_expr(X, p).subs(pts)
        assert sp.N(err - diam2 * (1 - p[X])) <= 0
        assert sp.N(diam2 * (1 - p[X]) - ce_bound_expr().subs(sub).subs(D, sp.sqrt(diam2))) <= 0
