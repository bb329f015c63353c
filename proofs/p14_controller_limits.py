"""C14 (controller limits): the Evo controller with window 1 and full steps walks Staircase(1), one jump per
token; with window >= L, steps 1/K and no forced commits it walks Synchronous() with K steps. One-jump decoding
of an exact oracle then samples the chain-rule product p(x) (AR) or the product of the marginals (K = 1).

The Evo rule of THEORY section 4 is restated here in plain Python (exact fractions and IEEE floats) and run;
laws by enumeration on symbolic and rational joint tables (V = 2, L = 3; V = 3, L = 2). Statement and
equations: proofs/p14_controller_limits.md.
"""

import itertools
import random
from fractions import Fraction

import sympy as sp

SNAP = 1e-12  # times within this of 0 are 0 (THEORY section 4)


# The Evo rule (eqs. 1-6), one sequence, times as Fractions, floats or sympy numbers


def step_size(u, dmin, dmax, kappa):
    """Delta = Dmin + (Dmax - Dmin) (1 - u)^kappa, eq. (1)."""
    return dmin + (dmax - dmin) * (1 - u) ** kappa


def cummax(values):
    out, top = [], None
    for v in values:
        top = v if top is None or v > top else top
        out.append(top)
    return out


def evo_call(t, u, top, calls, window, dmin, dmax, kappa=1, threshold=None, frontier=True, min_commits=1,
             max_calls=None, snap=SNAP):
    """The times after one call of the Evo controller from ``t`` (a list), eqs. (2)-(6).

    ``u``, ``top``: per-token uncertainty and largest probability (lists); ``calls``: the calls made before.
    """
    L = len(t)
    open_ = [ti > 0 for ti in t]
    rank = list(itertools.accumulate(int(o) for o in open_))
    active = [open_[i] and rank[i] <= window for i in range(L)]
    new = [t[i] - step_size(u[i], dmin, dmax, kappa) if active[i] else t[i] for i in range(L)]  # eq. (2)
    if threshold is not None:
        new = [0 if active[i] and top[i] >= threshold else new[i] for i in range(L)]  # an early commit
    new = [0 if v < snap or v <= 0 else v for v in new]  # max(0, .) and the snapping, eq. (3)
    if frontier:
        new = cummax(new)  # a token is slowed to its left neighbour's time, eq. (4)
    if max_calls is not None and calls + 1 >= max_calls:
        new = [0 if open_[i] else new[i] for i in range(L)]  # the last call commits everything, eq. (6)
    committed = sum(1 for i in range(L) if open_[i] and new[i] == 0)
    need = max(min_commits - committed, 0)
    if need:  # the forced commits, eq. (5)
        if frontier:  # the leftmost open tokens
            new = [0 if open_[i] and rank[i] <= committed + need else new[i] for i in range(L)]
        else:  # the most confident active tokens not yet committing
            cand = sorted((i for i in range(L) if active[i] and new[i] > 0), key=lambda i: -top[i])[:need]
            new = [0 if i in cand else new[i] for i in range(L)]
    return [min(a, b) for a, b in zip(new, t, strict=True)]


def evo_grid(L, u=None, top=None, prompt=0, limit=10_000, **cfg):
    """Every time vector of one decoding (the grid), from (0 .. 0 [prompt], 1 .. 1); None if it does not end
    within ``limit`` calls. ``u``, ``top``: callables (call, t) -> lists, default 1/2 everywhere."""
    one = cfg.pop("one", 1)
    t = [0] * prompt + [one] * (L - prompt)
    rows = [t]
    for calls in range(limit):
        if not any(v > 0 for v in t):
            return rows
        uu = u(calls, t) if u else [Fraction(1, 2)] * L
        tt = top(calls, t) if top else [Fraction(1, 2)] * L
        t = evo_call(t, uu, tt, calls, **cfg)
        rows.append(t)
    return None


def staircase_grid(L):
    """The grid of Staircase(1) with K = L steps from its formula t_i(p) = clip(i + 1 - p, 0, 1) at p = k, eq. (7)."""
    i, p = sp.symbols("i p", integer=True)
    formula = sp.Min(sp.Max(i + 1 - p, 0), 1)
    return [[int(formula.subs({i: j, p: k})) for j in range(L)] for k in range(L + 1)]


def synchronous_grid(L, K):
    """The grid of Synchronous() with K steps from t_i(s) = 1 - s at s = k / K, eq. (8)."""
    s = sp.Symbol("s")
    return [[Fraction(str(sp.Rational(1) - s.subs(s, sp.Rational(k, K))))] * L for k in range(K + 1)]


def test_equal_step_bounds_make_the_step_independent_of_the_uncertainty():
    u, kappa, dmin, dmax, D = sp.symbols("u kappa D_min D_max D", positive=True)
    delta = step_size(u, dmin, dmax, kappa)
    assert sp.diff(delta, u) != 0  # Dmin < Dmax: the step follows the model's confidence ...
    assert sp.simplify(delta.subs({dmin: D, dmax: D}) - D) == 0  # ... Dmin = Dmax = D: it is D whatever u, eq. (1)


def _random_inputs(seed):
    rng = random.Random(seed)

    def draw(calls, t):
        return [Fraction(rng.randint(0, 8), 8) for _ in t]
    return draw


def test_window_one_with_full_steps_walks_the_one_jump_staircase():
    for L in range(1, 7):
        target = staircase_grid(L)
        assert all(target[k] == [0] * k + [1] * (L - k) for k in range(L + 1))
        for frontier, min_commits, seed in itertools.product((True, False), (0, 1), range(3)):
            cfg = dict(window=1, dmin=1, dmax=1, frontier=frontier, min_commits=min_commits)
            grid = evo_grid(L, u=_random_inputs(seed), top=_random_inputs(seed + 9), **cfg)
            assert grid == target, (L, cfg)  # eq. (7): whatever the uncertainties, L calls
        if L >= 3:  # more forced commits than the window: under the frontier they reach past it, eq. (7)
            many = evo_grid(L, window=1, dmin=1, dmax=1, min_commits=3)
            assert many[1] == [0, 0, 0] + [1] * (L - 3) and many != target
            assert evo_grid(L, window=1, dmin=1, dmax=1, min_commits=3, frontier=False) == target
        if L >= 2:  # a window of 2 moves two tokens in the first call: not the staircase
            wide = evo_grid(L, window=2, dmin=1, dmax=1)
            assert wide[1] == [0, 0] + [1] * (L - 2) and wide != target
            early = evo_grid(L, window=1, dmin=1, dmax=1, threshold=Fraction(1, 4))  # same: commits at t = 0 anyway
            assert early == target
            half = evo_grid(L, window=1, dmin=Fraction(1, 2), dmax=Fraction(1, 2), min_commits=0)
            assert len(half) == 2 * L + 1 and half != target  # half steps: two calls per token


def test_window_l_with_steps_of_one_over_k_walks_the_synchronous_grid_exactly():
    for L, K in itertools.product(range(1, 5), range(1, 7)):
        target = synchronous_grid(L, K)
        cfg = dict(window=L, dmin=Fraction(1, K), dmax=Fraction(1, K), min_commits=0)
        for seed in range(2):
            assert evo_grid(L, u=_random_inputs(seed), **cfg) == target  # eq. (8), exact arithmetic
        assert evo_grid(L, window=L + 3, dmin=Fraction(1, K), dmax=Fraction(1, K), min_commits=0) == target
        if K >= 2:
            forced = evo_grid(L, **{**cfg, "min_commits": 1})  # the default forced commit: token 0 at call 1
            assert forced[1][0] == 0 and (L == 1 or forced[1][1] == 1 - Fraction(1, K)) and forced != target
        if K >= 2 and L >= 2:
            narrow = evo_grid(L, **{**cfg, "window": L - 1})  # the last token waits at t = 1 in the first call
            assert narrow[1][-1] == 1 and narrow != target


def test_in_floating_point_the_snapping_lands_the_synchronous_limit_on_zero():
    eps = 2.0**-53  # unit roundoff of float64
    late = []
    for K in [*range(1, 301), 1000, 4099]:
        step = 1.0 / K  # Delta = Dmin + (Dmax - Dmin)(1 - u)^kappa = 1/K + 0 exactly
        t, worst = 1.0, 0.0
        for k in range(1, K + 1):
            t = t - step  # the rounded subtraction of every call
            worst = max(worst, abs(Fraction(t) - (1 - Fraction(k, K))))
            if k < K:
                assert t >= SNAP  # nothing snaps early: 1 - k/K >= 1/K
        assert worst <= (K + 1) * eps  # rounding: |fl(1 - k fl(1/K)) - (1 - k/K)| <= (k + 1) eps, eq. (9)
        assert abs(t) < SNAP  # so the K-th value snaps to 0 (for K < 1e-12 / eps ~ 9000)
        if t != 0.0:
            late.append(K)
    # without the snapping the K-th call would not commit for these K (K = 3: 5.6e-17 is left), eq. (9)
    assert 3 in late and 5 in late
    grid = evo_grid(2, window=2, dmin=1.0 / 3, dmax=1.0 / 3, min_commits=0, one=1.0, snap=0.0, limit=10)
    assert grid is not None and len(grid) == 5  # one call more than K = 3
    assert len(evo_grid(2, window=2, dmin=1.0 / 3, dmax=1.0 / 3, min_commits=0, one=1.0)) == 4


def test_the_frontier_keeps_times_ordered_and_never_raises_one():
    values = [Fraction(k, 3) for k in range(4)]
    ordered = [t for t in itertools.product(values, repeat=4) if all(a <= b for a, b in itertools.pairwise(t))]
    for t in ordered:  # any proposal p <= t (steps only go down) from an ordered t, eq. (10)
        for p in itertools.product(*[[v for v in values if v <= ti] for ti in t]):
            c = cummax(p)
            assert all(a <= b for a, b in itertools.pairwise(c))  # ordered: t_i <= t_{i+1}
            assert all(ci <= ti for ci, ti in zip(c, t, strict=True))  # no time is raised
            assert all(ci >= pi for ci, pi in zip(c, p, strict=True))  # a token is only slowed, never forced ahead
    pairs = itertools.product(itertools.product(values, repeat=2), repeat=2)
    raised = [(t, p) for t, p in pairs if all(a <= b for a, b in zip(p, t, strict=True))
              and any(c > b for c, b in zip(cummax(p), t, strict=True))]
    assert raised and all(t[0] > t[1] for t, _ in raised)  # only an unordered t can be raised: the invariant is needed
    for seed in range(40):  # along whole decodings (thresholds, forced commits) every row stays ordered
        rng = random.Random(seed)
        grid = evo_grid(6, u=_random_inputs(seed), top=_random_inputs(seed + 1), prompt=rng.randint(0, 2),
                        window=rng.randint(1, 6), dmin=Fraction(1, 10), dmax=Fraction(rng.randint(1, 10), 10),
                        threshold=Fraction(rng.randint(4, 8), 8), min_commits=rng.randint(0, 2))
        assert all(a <= b for row in grid for a, b in itertools.pairwise(row))
        assert all(b <= a for r0, r1 in itertools.pairwise(grid) for a, b in zip(r0, r1, strict=True))


def test_forced_commits_end_every_decoding_within_l_calls():
    stall = lambda calls, t: [1] * len(t)  # noqa: E731  u = 1: Delta = Dmin = 0, the adversarial model
    for L, window, frontier, prompt in itertools.product(range(1, 7), (1, 3, 8), (True, False), (0, 1)):
        if prompt >= L:
            continue
        for min_commits in (1, 2):  # eq. (11): every call commits >= 1 open token
            grid = evo_grid(L, u=stall, prompt=prompt, window=window, dmin=0, dmax=1, frontier=frontier,
                            min_commits=min_commits)
            assert grid is not None and len(grid) - 1 <= L - prompt
            opened = [sum(1 for v in row if v > 0) for row in grid]
            assert all(a - b >= 1 for a, b in itertools.pairwise(opened))
        stuck = evo_grid(L, u=stall, prompt=prompt, window=window, dmin=0, dmax=1, frontier=frontier,
                         min_commits=0, limit=50)
        assert stuck is None  # no forced commit, Dmin = 0, no max_calls: a fixed point, never done
        capped = evo_grid(L, u=stall, prompt=prompt, window=window, dmin=0, dmax=1, frontier=frontier,
                          min_commits=0, max_calls=4)
        assert len(capped) - 1 == 4  # max_calls: everything left commits at the 4th call


# Laws (eqs. 12-16)


def log_gaussian(x, mean, var):
    return -((x - mean) ** 2) / (2 * var) - sp.log(2 * sp.pi * var) / 2


def test_a_token_at_t1_has_the_prior_as_posterior_when_alpha_one_is_zero():
    alpha1, sigma = sp.symbols("alpha_1 sigma", positive=True)
    z = sp.symbols("z0:2", real=True)
    e = (sp.Integer(0), sp.Symbol("Delta", positive=True))  # distinct 1-D embeddings
    p = {x: sp.Symbol("p" + "".join(map(str, x)), positive=True) for x in itertools.product(range(2), repeat=2)}
    lik = {x: p[x] * sp.exp(sum(log_gaussian(z[i], alpha1 * e[x[i]], sigma**2) for i in range(2))) for x in p}
    post0 = sum(lik[x] for x in p if x[0] == 1) / sum(lik.values())  # p(x_0 = 1 | z), both tokens at t = 1
    assert sp.simplify(sp.diff(post0, z[1])) != 0  # alpha(1) > 0: the other latent informs token 0 ...
    marginal = (p[1, 0] + p[1, 1]) / sum(p.values())
    assert sp.simplify(post0.subs(alpha1, 0) - marginal) == 0  # ... alpha(1) = 0: the marginal, eq. (12)
    # token 1 with token 0 committed (z_0 = e_w at t = 0, sigma -> 0) and itself at t = 1: p(x_1 | x_0 = w), eq. (13)
    g = sp.Symbol("g", positive=True)
    for w in range(2):
        lik = {x: p[x] * sp.exp(log_gaussian(e[w], e[x[0]], g**2)) for x in p}  # z_1's factor is a constant
        post1 = sum(lik[x] for x in p if x[1] == 1) / sum(lik.values())
        assert sp.simplify(sp.limit(post1, g, 0, "+") - p[w, 1] / (p[w, 0] + p[w, 1])) == 0


def test_the_inverse_transform_draw_has_the_given_probabilities():
    probs = [sp.Integer(0), sp.Rational(1, 5), sp.Integer(0), sp.Rational(1, 2), sp.Rational(3, 10)]
    cdf = list(itertools.accumulate(probs))

    def chosen(u, right=True):  # torch.searchsorted(cdf, u, right=right): the number of cdf entries <= u (< u)
        return sum(1 for c in cdf if (c <= u if right else c < u))

    for v, pv in enumerate(probs):  # {u in [0, 1): chosen(u) = v} = [cdf_{v-1}, cdf_v), of measure p_v, eq. (14)
        low = cdf[v - 1] if v else sp.Integer(0)
        assert sp.Interval.Ropen(low, cdf[v]).measure == pv
        if pv:
            assert all(chosen(low + (cdf[v] - low) * sp.Rational(k, 7)) == v for k in range(7))
    zeros = [v for v, pv in enumerate(probs) if pv == 0]
    edges = [sp.Integer(0), *cdf[:-1]]  # the points where a cell starts, u = 0 included (torch.rand can give 0)
    assert all(chosen(u) not in zeros for u in edges)  # right=True never draws a token of probability 0 ...
    assert chosen(sp.Integer(0), right=False) == 0 in zeros  # ... right=False would, at u = 0


SEQ3 = list(itertools.product(range(2), repeat=3))


def one_jump_law(p, blocks, x):
    """Law of a one-jump grid whose calls move the token blocks ``blocks`` (lists) 1 -> 0 in order, eq. (15):
    at call k the earlier blocks are committed, the rest at t = 1, so each token of block k is drawn on its own
    from p(x_i | x_earlier) (eqs. 12-14), independently of the others of its block."""
    seqs = list(p)
    total = sum(p.values())

    def prob(fixed):  # p(x_j = fixed[j] for j in fixed)
        return sum(p[y] for y in seqs if all(y[j] == v for j, v in fixed.items())) / total

    out, done = sp.Integer(1), {}
    for block in blocks:
        for i in block:
            out *= prob({**done, i: x[i]}) / prob(done)
        done.update({i: x[i] for i in block})
    return out


def total_mass(p, blocks):
    """sum_x of the law of eq. (15), summed block by block from the last (cancelling after each block)."""
    exprs = {x: one_jump_law(p, blocks, x) for x in p}
    for block in reversed(blocks):
        grouped = {}
        for x, e in exprs.items():
            key = tuple(None if i in block else v for i, v in enumerate(x))
            grouped[key] = grouped.get(key, 0) + e
        exprs = {k: sp.cancel(v) for k, v in grouped.items()}
    (value,) = exprs.values()
    return value


def blocks_of(grid):
    """The tokens that jump 1 -> 0 together in each row of a one-jump grid (None if a token stops in between)."""
    out = []
    for r0, r1 in itertools.pairwise(grid):
        moved = [i for i, (a, b) in enumerate(zip(r0, r1, strict=True)) if a != b]
        if any(r0[i] != 1 or r1[i] != 0 for i in moved):
            return None
        out.append(moved)
    return out


def test_one_jump_per_token_samples_p_x_and_one_synchronous_step_the_marginals():
    p = {x: sp.Symbol("p" + "".join(map(str, x)), positive=True) for x in SEQ3}
    total = sum(p.values())
    ar = blocks_of(evo_grid(3, window=1, dmin=1, dmax=1))  # C14's AR limit
    sync = blocks_of(evo_grid(3, window=3, dmin=1, dmax=1, min_commits=0))  # its synchronous limit, K = 1
    wide = blocks_of(evo_grid(3, window=2, dmin=1, dmax=1))  # the wrong AR variant
    assert ar == [[0], [1], [2]] and sync == [[0, 1, 2]] and wide == [[0, 1], [2]]
    assert blocks_of(evo_grid(3, window=3, dmin=Fraction(1, 2), dmax=Fraction(1, 2), min_commits=0)) is None
    for blocks in (ar, sync, wide):  # each is a law: the factors read only earlier blocks
        assert total_mass(p, blocks) == 1
    for x in SEQ3:  # chain rule: prod_i p(x_i | x_<i) = p(x), eq. (16)
        assert sp.cancel(one_jump_law(p, ar, x) - p[x] / total) == 0
        marg = sp.Mul(*[sum(p[y] for y in SEQ3 if y[i] == x[i]) / total for i in range(3)])
        assert sp.cancel(one_jump_law(p, sync, x) - marg) == 0  # K = 1: prod_i p(x_i), eq. (17)
    correlated = dict(zip(SEQ3, [sp.Rational(k, 36) for k in (8, 1, 2, 5, 3, 4, 6, 7)], strict=True))  # sums to 1
    gaps = {name: sum(abs(one_jump_law(correlated, b, x) - correlated[x]) for x in SEQ3) / 2
            for name, b in (("ar", ar), ("sync", sync), ("wide", wide))}  # total variation to p(x)
    assert gaps["ar"] == 0 and gaps["sync"] > 0 and gaps["wide"] > 0
    product = {x: sp.Rational(1 + x[0], 3) * sp.Rational(1 + 2 * x[1], 4) * sp.Rational(2 - x[2], 3) for x in SEQ3}
    assert sum(abs(one_jump_law(product, sync, x) - product[x]) for x in SEQ3) == 0  # independent tokens: no gap


def test_the_laws_on_three_letters_by_enumeration():
    seqs = list(itertools.product(range(3), repeat=2))
    weights = [5, 1, 1, 1, 6, 2, 1, 3, 7]  # a correlated table on V = 3, L = 2
    p = {x: sp.Rational(w, sum(weights)) for x, w in zip(seqs, weights, strict=True)}
    ar, sync = [[0], [1]], [[0, 1]]
    assert blocks_of(evo_grid(2, window=1, dmin=1, dmax=1)) == ar
    assert blocks_of(evo_grid(2, window=2, dmin=1, dmax=1, min_commits=0)) == sync
    assert all(one_jump_law(p, ar, x) == p[x] for x in seqs)
    marg = [[sum(p[y] for y in seqs if y[i] == v) for v in range(3)] for i in range(2)]
    assert all(one_jump_law(p, sync, x) == marg[0][x[0]] * marg[1][x[1]] for x in seqs)
    tc = sum(w * sp.log(w / (marg[0][x[0]] * marg[1][x[1]])) for x, w in p.items())  # C8's total correlation
    assert float(tc) > 0.1  # the tokens are correlated: the two laws differ by a visible amount
