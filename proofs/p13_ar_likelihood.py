"""C13 (exact AR likelihood of a model): along Staircase(1) with one jump per token, the token sampler's law
is the product of the model's conditionals, and the mixture-kernel NELBO at t_min = 0 equals its -log.

Symbolic laws (L = 3, binary vocabulary), limits at the clean end (1-D embeddings), and the attention
masks of the Transformer as boolean algebra (sympy logic). Statement and equations:
proofs/p13_ar_likelihood.md.
"""

import itertools

import sympy as sp
from sympy.logic.boolalg import And, Not, Or, simplify_logic

L, V = 3, 2
SEQS = list(itertools.product(range(V), repeat=L))
z, eps, e_x = sp.symbols("z epsilon e_x", real=True)
a, g, d = sp.symbols("a g Delta", positive=True)  # alpha_s, sigma_s (-> 1, 0 as s -> 0), |e_x - e_y| > 0
pi_x, pi_y = sp.symbols("pi_x pi_y", positive=True)


def log_gaussian(x, mean, var):
    """log N(x; mean, var) in one dimension."""
    return -((x - mean) ** 2) / (2 * var) - sp.log(2 * sp.pi * var) / 2


def normalised(weights):
    """A probability vector from positive weights (a softmax of their logs)."""
    total = sum(weights)
    return [w / total for w in weights]


def model_conditionals(look_ahead=False):
    """pi_i(v | context) of a generic model, one free positive weight per (context, v), eq. (2).

    The context of token i is its prefix x_<i; with ``look_ahead`` token 1 reads x_2 instead of x_0, the
    law of a model whose conditional sees a token not yet drawn.
    """
    def pi(i, v, x):
        context = (x[2],) if look_ahead and i == 1 else tuple(x[:i])
        name = "w" + str(i) + "_" + "".join(map(str, context))
        return normalised([sp.Symbol(f"{name}_{u}", positive=True) for u in range(V)])[v]
    return pi


def oracle_conditionals(p):
    """p(x_i = v | x_<i) of the joint ``p`` (dict over SEQS, unnormalised), by marginalisation, eq. (4)."""
    def marginal(prefix):
        return sum(p[y] for y in SEQS if y[:len(prefix)] == prefix)

    def pi(i, v, x):
        return marginal((*x[:i], v)) / marginal(tuple(x[:i]))
    return pi


def ar_law(pi, x):
    """p^AR(x) = prod_i pi_i(x_i | x_<i), eq. (2)."""
    return sp.Mul(*[pi(i, x[i], x) for i in range(L)])


def prior_kl_expr(alpha1):
    """KL(N(alpha(1) e, sigma^2) || N(0, sigma^2)) by integration over z, eq. (6)."""
    sigma = sp.Symbol("sigma", positive=True)
    q = log_gaussian(z, alpha1 * e_x, sigma**2)
    density = sp.exp(q)
    return sp.simplify(sp.integrate(density * (q - log_gaussian(z, 0, sigma**2)), (z, -sp.oo, sp.oo))), sigma


def commit_term_expr(delta=d):
    """Mixture log-ratio of the jump t = 1 -> s, ``log q(z_s | x) - log sum_v pi_v q(z_s | e_v)``, at
    ``z_s = alpha_s e_x + sigma_s eps`` (the step posterior from pure noise is N(alpha_s e, sigma_s^2), p07),
    for two tokens x, y with ``e_y = e_x - delta``, eq. (8)."""
    z_s = a * e_x + g * eps
    log_ratio = log_gaussian(z_s, a * (e_x - delta), g**2) - log_gaussian(z_s, a * e_x, g**2)  # log N_y - log N_x
    return -sp.log(pi_x + pi_y * sp.exp(sp.simplify(log_ratio)))


def step_posterior_expr(x, alpha_t, alpha_s, sigma_t, sigma_s, z_t):
    """(mu, sig2) of q(z_s | z_t, x) as in THEORY section 2 (derived in p03)."""
    a_ts = alpha_t / alpha_s
    v_ts = sigma_t**2 - a_ts**2 * sigma_s**2
    return a_ts * sigma_s**2 / sigma_t**2 * z_t + alpha_s * v_ts / sigma_t**2 * x, v_ts * sigma_s**2 / sigma_t**2


# (1)-(4): the law of AR decoding


def test_the_ar_law_is_a_distribution_because_each_factor_looks_back():
    pi = model_conditionals()
    assert sp.cancel(sum(ar_law(pi, x) for x in SEQS) - 1) == 0  # eq. (3)
    cheat = sum(ar_law(model_conditionals(look_ahead=True), x) for x in SEQS)  # token 1 reads x_2: no sampling order
    point = {w: k + 1 for k, w in enumerate(sorted(cheat.free_symbols, key=str))}  # weights 1, 2, 3, ...
    assert sp.nsimplify(cheat.subs(point)) != 1  # a counterexample: the look-ahead "law" is not normalised


def test_an_exact_posterior_gives_the_chain_rule():
    p = {x: sp.Symbol("p" + "".join(map(str, x)), positive=True) for x in SEQS}
    total = sum(p.values())
    pi = oracle_conditionals(p)
    for x in SEQS:  # prod_i p(x_i | x_<i) = p(x): the marginals telescope, eq. (4)
        assert sp.cancel(ar_law(pi, x) - p[x] / total) == 0
    wrong = {x: p[x] / total for x in SEQS}  # the product of the token marginals is not p(x) (C8's gap)
    marg = [[sum(wrong[y] for y in SEQS if y[i] == v) for v in range(V)] for i in range(L)]
    assert sp.cancel(sp.Mul(*[marg[i][SEQS[0][i]] for i in range(L)]) - wrong[SEQS[0]]) != 0


# (5)-(7): the trajectory of the NELBO along Staircase(1) at t_min = 0


def test_an_exact_posterior_ignores_pure_noise_latents():
    alpha1, sigma1 = sp.symbols("alpha_1 sigma_1", positive=True)
    p0, p1, e0, e1 = sp.symbols("p0 p1 e0 e1", positive=True)
    lik = [sp.exp(log_gaussian(z, alpha1 * e, sigma1**2)) for e in (e0, e1)]
    post = p1 * lik[1] / (p0 * lik[0] + p1 * lik[1])  # p(x_i = 1 | z_i at t = 1, the rest), eq. (7)
    slope = sp.simplify(sp.diff(post, z))
    assert slope != 0  # alpha(1) > 0: the latent at t = 1 still carries information ...
    assert sp.simplify(slope.subs(alpha1, 0)) == 0  # ... alpha(1) = 0: none, whatever z
    assert sp.simplify(post.subs(alpha1, 0) - p1 / (p0 + p1)) == 0  # the weight is the prior's


def test_the_prior_term_vanishes_exactly_when_alpha_one_is_zero():
    alpha1 = sp.Symbol("alpha_1", nonnegative=True)
    kl, sigma = prior_kl_expr(alpha1)
    assert sp.simplify(kl - alpha1**2 * e_x**2 / (2 * sigma**2)) == 0  # eq. (6)
    assert kl.subs(alpha1, 0) == 0


def test_the_jump_to_the_clean_end_lands_on_the_embedding():
    z_t = sp.Symbol("z_t", real=True)
    t_alpha, t_sigma = sp.symbols("alpha_t sigma_t", positive=True)
    # s = 0: alpha_s = 1, sigma_s = 0: q(z_0 | z_t, x) is the point e_x, from any t (eq. 5) ...
    mu, var = step_posterior_expr(e_x, t_alpha, 1, t_sigma, 0, z_t)
    assert sp.simplify(mu - e_x) == 0 and var == 0
    # ... and from t = 1 (alpha_t = 0) the step does not read z_t at all, for any s
    mu, var = step_posterior_expr(e_x, 0, a, t_sigma, g, z_t)
    assert sp.diff(mu, z_t) == 0 and sp.simplify(mu - a * e_x) == 0 and sp.simplify(var - g**2) == 0


# (8)-(10): the terms at sigma = 0 and their sum


def test_the_commit_term_is_minus_log_of_the_weight_and_does_not_vary():
    term = commit_term_expr()
    assert sp.diff(term, eps) != 0  # sigma_s > 0 (t_min > 0): the term varies with the trajectory ...
    commit = sp.limit(term, g, 0, "+")
    assert commit == -sp.log(pi_x)  # ... at sigma_s = 0 it is -log pi_x for every eps and alpha_s > 0, eq. (8)
    # coinciding embeddings do not identify the token: the limit is -log(pi_x + pi_y), not -log pi_x
    assert sp.simplify(sp.limit(commit_term_expr(0), g, 0, "+") + sp.log(pi_x + pi_y)) == 0


def test_the_exact_decoder_at_the_clean_end_identifies_x():
    p = {y: sp.Symbol("q" + "".join(map(str, y)), positive=True) for y in itertools.product(range(2), repeat=2)}
    emb = [sp.Integer(0), d]  # distinct 1-D embeddings
    noise = sp.symbols("eps0 eps1", real=True)
    for x in p:  # p(x | z) at z = e_x + sigma eps -> 1 as sigma -> 0: the decoder term is 0, eq. (9)
        zs = [emb[x[i]] + g * noise[i] for i in range(2)]
        lik = {y: p[y] * sp.exp(sum(log_gaussian(zs[i], emb[y[i]], g**2) for i in range(2))) for y in p}
        post = sp.simplify(lik[x] / sum(lik.values()))
        assert sp.limit(post, g, 0, "+") == 1


def test_the_one_jump_nelbo_is_minus_log_of_the_ar_law():
    alpha1 = sp.Symbol("alpha_1", nonnegative=True)
    prior = prior_kl_expr(alpha1)[0].subs(alpha1, 0)  # eq. (6)
    commit = sp.limit(commit_term_expr(), g, 0, "+")  # -log pi_x, eq. (8)
    recon = 0  # eq. (9)
    p = {x: sp.Symbol("p" + "".join(map(str, x)), positive=True) for x in SEQS}
    for pi, target in ((model_conditionals(), None), (oracle_conditionals(p), lambda x: p[x] / sum(p.values()))):
        for x in SEQS:  # one jump per token k, the weight pi_k(x_k | x_<k) of the state tau^(k), eq. (10)
            nelbo = prior + sum(commit.subs(pi_x, pi(k, x[k], x)) for k in range(L)) + recon
            law = ar_law(pi, x) if target is None else target(x)  # the oracle: -log p(x), C7
            assert sp.simplify(sp.expand_log(nelbo + sp.log(law), force=True)) == 0


# (11)-(15): the Transformer's masks (evoflow.nn.attention)

N = 4
c = sp.symbols(f"c0:{N}")  # token k committed: t_k = 0
n = sp.symbols(f"n0:{N}")  # token k pure noise: t_k = 1


def frontier(c=c, n=n):
    """M[q][k] = (not c_q and (not n_k or k = q)) or (c_k and k <= q), eq. (11)."""
    m = len(c)
    return [[Or(And(Not(c[q]), Or(Not(n[k]), sp.true if k == q else sp.false)),
                And(c[k], sp.true if k <= q else sp.false)) for k in range(m)] for q in range(m)]


def frontier_of_p12(c=c, n=n):
    """The mask C12 was first stated with: active tokens attend to every key, (not c_q) or (c_k and k <= q)."""
    m = len(c)
    return [[Or(Not(c[q]), And(c[k], sp.true if k <= q else sp.false)) for k in range(m)] for q in range(m)]


def bidirectional(c=c, n=n):
    return [[sp.true] * len(c) for _ in c]


def influence(mask, layers):
    """R[q][k]: token k's input reaches token q's state after ``layers`` attention layers (p12, eq. 2)."""
    m = len(mask)
    R = [[sp.true if q == k else sp.false for k in range(m)] for q in range(m)]
    for _ in range(layers):
        R = [[simplify_logic(Or(*[And(mask[q][j], R[j][k]) for j in range(m)])) for k in range(m)] for q in range(m)]
    return R


def ar_state(i, m=N):
    """Flags of tau^(i) = (0, .., 0, 1, .., 1): tokens before i committed, token i and the rest at t = 1."""
    return {**{c[k]: sp.true if k < i else sp.false for k in range(m)}, **{n[k]: sp.false if k < i else sp.true
                                                                           for k in range(m)}}


def test_a_token_at_t1_reaches_no_other_token_under_frontier():
    for pattern, hides in ((frontier, True), (frontier_of_p12, False), (bidirectional, False)):
        for k in range(N):
            noise = {n[k]: sp.true, c[k]: sp.false}  # token k at t = 1; every other flag free
            mask = [[simplify_logic(x.subs(noise)) for x in row] for row in pattern()]
            R = influence(mask, N)
            leaks = [q for q in range(N) if q != k and R[q][k] != sp.false]
            assert (not leaks) == hides, (pattern.__name__, k, leaks)  # eq. (12)


def test_in_the_ar_state_the_moving_token_reads_exactly_its_prefix():
    for pattern, want in ((frontier, [True] * N), (frontier_of_p12, [False] * (N - 1) + [True]),
                          (bidirectional, [False] * (N - 1) + [True])):  # the last token has no suffix to see
        exact = []
        for i in range(N):
            mask = [[simplify_logic(x.subs(ar_state(i))) for x in row] for row in pattern()]
            exact.append(influence(mask, N)[i] == [sp.true] * (i + 1) + [sp.false] * (N - i - 1))  # eq. (13)
        assert exact == want, pattern.__name__


def test_committed_rows_are_those_of_p12():
    new, old = frontier(), frontier_of_p12()
    for q in range(N):  # C12's argument reads only committed rows: it carries over to the mask of eq. (11), eq. (15)
        for k in range(N):
            assert simplify_logic(new[q][k].subs(c[q], sp.true)) == simplify_logic(old[q][k].subs(c[q], sp.true))
    assert simplify_logic(new[0][1].subs(c[0], sp.false)) != simplify_logic(old[0][1].subs(c[0], sp.false))


def two_stream_ar(m=N, own_clean=False):
    """TwoStream mask with one group per token (start_i = i, noised tokens at t = 1): nodes 0..m-1 clean,
    m..2m-1 noised. ``own_clean`` lets noised i see clean j <= i (a wrong prefix rule), eq. (14)."""
    clean = [[sp.true if k <= q else sp.false for k in range(m)] + [sp.false] * m for q in range(m)]
    noised = [[sp.true if (k <= i if own_clean else k < i) else sp.false for k in range(m)]
              + [sp.true if j == i else sp.false for j in range(m)] for i in range(m)]  # own group, t = 1: itself
    return clean + noised


def test_two_stream_scores_each_token_in_its_ar_state():
    for own_clean, equal in ((False, True), (True, False)):
        mask = two_stream_ar(own_clean=own_clean)
        R = influence(mask, N)
        for i in range(N):
            nodes = [*range(i), N + i]  # clean 0..i-1, noised i  <->  tokens 0..i of tau^(i)
            reach = [k for k in range(2 * N) if R[N + i][k] != sp.false]
            state = [[simplify_logic(x.subs(ar_state(i))) for x in row[:i + 1]] for row in frontier()[:i + 1]]
            induced = [[mask[q][k] for k in nodes] for q in nodes]
            assert (set(reach) <= set(nodes) and induced == state) == equal, (own_clean, i)  # eq. (14)
