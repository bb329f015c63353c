"""C12 (frontier cache): under the frontier mask, the leading committed run never depends on later tokens.

Boolean algebra on the mask with symbolic "committed" flags c_k (t_k = 0). Statement and the
argument over layers: proofs/p12_frontier_cache.md.
"""

import sympy as sp
from sympy.logic.boolalg import And, Not, Or, simplify_logic

L = 5
c = sp.symbols(f"c0:{L}")  # c_k: token k is committed (t_k = 0)


def frontier_mask(flags=c, offset=0):
    """M[q][k] = (not c_q) or (c_k and k <= q) for queries at offset.., keys at 0..; cached keys committed, eq. (1)."""
    keys = [sp.true] * offset + list(flags)
    return [[Or(Not(flags[q]), And(keys[k], sp.true if k <= q + offset else sp.false))
             for k in range(len(keys))] for q in range(len(flags))]


def influence(mask, layers):
    """R[q][k]: token k's input can reach token q's state after ``layers`` attention layers, eq. (2)."""
    n = len(mask)
    R = [[sp.true if q == k else sp.false for k in range(n)] for q in range(n)]
    for _ in range(layers):
        R = [[simplify_logic(Or(*[And(mask[q][j], R[j][k]) for j in range(n)])) for k in range(n)] for q in range(n)]
    return R


def test_leading_committed_rows_are_causal_and_ignore_the_rest():
    M = frontier_mask()
    for q in range(L):
        prefix = {c[k]: sp.true for k in range(q + 1)}  # tokens 0..q committed
        row = [simplify_logic(x.subs(prefix)) for x in M[q]]
        assert row == [sp.true] * (q + 1) + [sp.false] * (L - q - 1)  # eq. (3): no free flag left


def test_influence_of_the_prefix_stays_in_the_prefix_over_layers():
    R = influence(frontier_mask(), L)  # L layers: the closure is reached
    for q in range(L):
        prefix = {c[k]: sp.true for k in range(q + 1)}
        assert [simplify_logic(x.subs(prefix)) for x in R[q]] == [sp.true] * (q + 1) + [sp.false] * (L - q - 1)
    # an active token reads every token, the cached prefix included
    assert all(simplify_logic(x.subs(c[L - 1], sp.false)) == sp.true for x in R[L - 1])


def test_a_committed_token_behind_an_active_one_is_not_cacheable():
    M = frontier_mask()
    row = [simplify_logic(x.subs({c[1]: sp.true})) for x in M[1]]  # token 1 committed, token 0 undecided
    assert row[0] == c[0]  # its attention changes when token 0 commits: cache only the leading run, eq. (4)


def test_mask_with_cached_prefix_is_the_tail_of_the_full_mask():
    P = 2
    full = frontier_mask()
    cached = frontier_mask(c[P:], offset=P)  # queries P..L-1 after P cached keys
    prefix = {c[k]: sp.true for k in range(P)}
    for q in range(L - P):
        for k in range(L):
            assert simplify_logic(cached[q][k]) == simplify_logic(full[P + q][k].subs(prefix)), (q, k)  # eq. (5)
