"""C7 (AR limit): with one token moving per step the exact-posterior mixture kernel is the true reverse kernel.

Two tokens, binary vocabulary {e0, e1}, symbolic joint p(x). Statement and equations:
proofs/p07_ar_limit.md.
"""

import sympy as sp

ALPHA = sp.Function("alpha", positive=True)
SIGMA = sp.Function("sigma", positive=True)
t, s = sp.symbols("t s", positive=True)  # token 1 steps t -> s < t
z_s, z_t, m = sp.symbols("z_s z_t m", real=True)
P = {(a, b): sp.Symbol(f"p{a}{b}", positive=True) for a in range(2) for b in range(2)}  # p(x1 = a, x2 = b)


def log_gaussian(z, mean, var):
    """log N(z; mean, var)."""
    return -((z - mean) ** 2) / (2 * var) - sp.log(2 * sp.pi * var) / 2


def step_posterior_expr(x, alpha_t, alpha_s, sigma_t, sigma_s):
    """(mu, sig2) of q(z_s | z_t, x) as in THEORY section 2 (derived in p03)."""
    a_ts = alpha_t / alpha_s
    v_ts = sigma_t**2 - a_ts**2 * sigma_s**2
    return a_ts * sigma_s**2 / sigma_t**2 * z_t + alpha_s * v_ts / sigma_t**2 * x, v_ts * sigma_s**2 / sigma_t**2


def mixture_kernel_expr(weights, kernels):
    """sum_v p(x_i = v | z) q(z_s | z_t, e_v), eq. (3)."""
    return sum(w * k for w, k in zip(weights, kernels, strict=True))


def test_gaussian_bayes_identity():
    a_t, a_s, g_t, g_s = ALPHA(t), ALPHA(s), SIGMA(t), SIGMA(s)
    mu, var = step_posterior_expr(m, a_t, a_s, g_t, g_s)
    a_ts = a_t / a_s
    forward = log_gaussian(z_s, a_s * m, g_s**2) + log_gaussian(z_t, a_ts * z_s, g_t**2 - a_ts**2 * g_s**2)
    backward = log_gaussian(z_t, a_t * m, g_t**2) + log_gaussian(z_s, mu, var)  # eq. (1)
    assert sp.simplify(sp.expand_log(forward - backward, force=True)) == 0


def test_mixture_kernel_is_the_true_reverse_kernel_when_one_token_moves():
    pos = dict(positive=True)
    Gs, Gt, K = (sp.symbols(f"{n}0:2", **pos) for n in ("Gs", "Gt", "K"))  # q(z_s|e_v), q(z_t|e_v), q(z_s|z_t,e_v)
    Q2 = sp.symbols("Q0:2", **pos)  # q(z_2 | e_w): token 2 does not move
    T = sp.Symbol("T", **pos)  # q(z_t | z_s): the forward step, independent of x
    true = sum(P[a, b] * Q2[b] * Gs[a] * T for a, b in P) / sum(P[a, b] * Q2[b] * Gt[a] for a, b in P)  # eq. (2)
    post = [sum(P[v, b] * Q2[b] for b in range(2)) * Gt[v] / sum(P[a, b] * Q2[b] * Gt[a] for a, b in P) for v in (0, 1)]
    mix = mixture_kernel_expr(post, K)
    assert sp.cancel(true - mix) != 0  # not an identity in the raw densities ...
    bayes = {Gs[v]: Gt[v] * K[v] / T for v in (0, 1)}  # ... but after eq. (1): Gs T = Gt K
    assert sp.cancel(true.subs(bayes) - mix) == 0  # eq. (4)


def test_jump_from_pure_noise_steps_toward_the_embedding():
    a_s, g_t, g_s = ALPHA(s), SIGMA(t), SIGMA(s)
    mu, var = step_posterior_expr(m, 0, a_s, g_t, g_s)  # alpha(1) = 0
    assert sp.simplify(mu - a_s * m) == 0 and sp.simplify(var - g_s**2) == 0  # eq. (5)


k, d = sp.symbols("k Delta", positive=True)  # k = alpha / sigma = sqrt(SNR); Delta = |e_x - e_y| > 0
eps = sp.Symbol("epsilon", real=True)  # standardised noise of z ~ q(. | x)


def log_ratio_expr():
    """log N(z; a e_y, g^2) - log N(z; a e_x, g^2) at z = a e_x + g eps, in terms of k = a / g, eq. (6)."""
    a, g = sp.symbols("a g", positive=True)
    ex = sp.Symbol("e_x", real=True)
    z = a * ex + g * eps
    return sp.simplify((log_gaussian(z, a * (ex - d), g**2) - log_gaussian(z, a * ex, g**2)).subs(a, k * g))


def test_jump_term_tends_to_minus_log_of_the_posterior_weight():
    pi_x, pi_y = sp.symbols("pi_x pi_y", positive=True)
    log_ratio = log_ratio_expr()
    assert sp.simplify(log_ratio + k * eps * d + k**2 * d**2 / 2) == 0  # eq. (6)
    rest = sp.log(1 + pi_y / pi_x * sp.exp(log_ratio))  # integrand = -log pi_x + rest, eq. (7)
    assert sp.limit(rest, k, sp.oo) == 0
    assert sp.simplify(eps**2 / 2 - log_ratio - (eps + k * d) ** 2 / 2) == 0  # log_ratio <= eps^2 / 2, eq. (8)
    std_normal = sp.exp(-(eps**2) / 2) / sp.sqrt(2 * sp.pi)
    assert sp.integrate(eps**2 / 2 * std_normal, (eps, -sp.oo, sp.oo)) == sp.Rational(1, 2)  # dominating bound


def test_committed_neighbour_identifies_its_token():
    R = sp.exp(log_ratio_expr())  # N(z_1; e_y) / N(z_1; e_x) at z_1 ~ q(. | x_1 = x), eq. (6)
    x1, y1 = 0, 1
    for w in (0, 1):  # p(x_2 = w | z_1) with z_1 at high SNR -> p(x_2 = w | x_1), eq. (9)
        post = (P[x1, w] + P[y1, w] * R) / (P[x1, 0] + P[x1, 1] + (P[y1, 0] + P[y1, 1]) * R)
        assert sp.simplify(sp.limit(post, k, sp.oo) - P[x1, w] / (P[x1, 0] + P[x1, 1])) == 0


def test_chain_rule_of_the_one_jump_staircase():
    for a, b in P:  # -log p(x_1) - log p(x_2 | x_1) = -log p(x), eq. (10)
        marg = P[a, 0] + P[a, 1]
        nelbo = -sp.log(marg) - sp.log(P[a, b] / marg)
        assert sp.simplify(sp.expand_log(nelbo + sp.log(P[a, b]), force=True)) == 0
