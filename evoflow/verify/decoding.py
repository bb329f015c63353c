"""Checks of decoding (THEORY section 4): C14, the limits of the Evo controller.

Two rows. The first is a statement about grids, true for any denoiser: the Evo controller with window 1 and
full steps walks the grid of ``Staircase(1)``, one jump per token, and with window L, steps 1/K and
``min_commits = 0`` the grid of ``Synchronous()`` with K steps, so with the same seed ``evoflow.generate``
decodes the same tokens along the same time history (token sampling and DDIM between commits). The second
is about laws and needs ``alpha(1) = 0`` and the exact posterior: decodings along the AR limit follow
``p(x)``, along the K = 1 synchronous limit ``prod_i p(x_i)``; each is a chi-square test over the first m
tokens (the largest m <= L with ``V^m <= 512``; cells of expected count below 5 pooled), its p-value
computed here (the regularised incomplete gamma function), without scipy. Derivation:
proofs/p14_controller_limits.md.
"""

from __future__ import annotations

import itertools
import math

import torch

from evoflow.decoding import EvoController, GenerateResult, generate
from evoflow.paths import Staircase, Synchronous
from evoflow.verify.context import F64, ClaimResult, Context, needing_pure_noise, verdict

__all__ = ["ar_limit", "check_c14", "chi2_sf", "chi_square", "synchronous_limit"]

SYNC_STEPS = 5  # K of the synchronous limit: 1/5 is not a float, so K subtractions land within 1e-12 of 0
SAMPLES = 10000  # decodings per law in the chi-square row
MAX_CELLS = 512  # the chi-square runs over the first m tokens, V^m <= MAX_CELLS
TIME_ATOL = 1e-12  # the grids' snapping tolerance (THEORY section 4)
P_MIN = 1e-3  # a law row fails below this p-value


def ar_limit() -> EvoController:
    """C14's AR limit: window 1, full steps (``Delta = 1``), no early commits: ``Staircase(1)``, one jump per token."""
    return EvoController(window=1, min_step=1.0, max_step=1.0, commit_threshold=None)


def synchronous_limit(length: int, steps: int) -> EvoController:
    """C14's synchronous limit: window ``length``, ``Delta = 1/steps``, no early or forced commits
    (``min_commits = 0``): ``Synchronous()`` with ``steps`` steps."""
    return EvoController(window=length, min_step=1.0 / steps, max_step=1.0 / steps, commit_threshold=None,
                         min_commits=0)


def chi2_sf(x: float, df: int) -> float:
    """``P(X >= x)`` for ``X ~ chi-square(df)``: the regularised upper incomplete gamma ``Q(df/2, x/2)``, by its
    series below ``a + 1`` and Lentz's continued fraction above (float64; the chi-square rows of C14)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    if math.isnan(x):
        return math.nan
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    a, y = df / 2, x / 2
    front = math.exp(a * math.log(y) - y - math.lgamma(a))
    if y < a + 1:  # P(a, y) = front * sum_n y^n / (a (a+1) .. (a+n))
        term = total = 1.0 / a
        k = a
        while abs(term) > 1e-17 * abs(total):
            k += 1.0
            term *= y / k
            total += term
        return min(1.0, max(0.0, 1.0 - front * total))
    tiny = 1e-300  # Q(a, y) = front / (y + 1 - a - 1 (1 - a) / (y + 3 - a - ...)), modified Lentz
    b = y + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 100000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return min(1.0, max(0.0, front * h))


def chi_square(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> tuple[float, int, float]:
    """``(statistic, df, p-value)`` of Pearson's test of ``counts`` (n,) against ``probs`` (n,) (C14).

    Cells of expected count below ``min_expected`` are pooled into one (with the next smallest cells while the
    pool is still below it); a draw in a cell of probability 0 gives an infinite statistic and p = 0; with a
    single bin left there is nothing to test (df 0, p = 1).
    """
    counts, probs = counts.to(F64).flatten(), probs.to(F64).flatten()
    if bool((counts[probs == 0] > 0).any()):
        return math.inf, max(int((probs > 0).sum()) - 1, 1), 0.0
    keep = probs > 0
    counts, expected = counts[keep], probs[keep] / probs[keep].sum() * counts.sum()
    order = expected.argsort()
    counts, expected = counts[order], expected[order]
    pooled = int((expected < min_expected).sum())
    while 0 < pooled < expected.numel() and float(expected[:pooled].sum()) < min_expected:
        pooled += 1
    if pooled > 1:
        counts = torch.cat([counts[:pooled].sum()[None], counts[pooled:]])
        expected = torch.cat([expected[:pooled].sum()[None], expected[pooled:]])
    df = expected.numel() - 1
    if df < 1:
        return 0.0, 0, 1.0
    stat = float(((counts - expected) ** 2 / expected).sum())
    return stat, df, chi2_sf(stat, df)


def _differences(a: GenerateResult, b: GenerateResult) -> tuple[float, float]:
    """Fraction of sequences decoded differently (a token, a time history of another length, or a time off by more
    than the snapping tolerance) and the largest time difference (inf when the histories differ in length)."""
    tokens = (a.tokens != b.tokens).any(-1)
    if a.times.shape != b.times.shape:
        return 1.0, math.inf
    dt = (a.times - b.times).abs()
    differ = tokens | (dt > TIME_ATOL).any(0).any(-1)
    return float(differ.to(F64).mean()), float(dt.max())


def _prefix_laws(ctx: Context, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cells (V^m, m), and on them the oracle's law of the first m tokens and the product of its marginals."""
    o, L = ctx.oracle, ctx.settings.length
    V = o.embeddings.shape[0]
    cells = torch.tensor(list(itertools.product(range(V), repeat=m)), dtype=torch.long)
    padded = torch.cat([cells, torch.zeros((cells.shape[0], L - m), dtype=torch.long)], 1)
    joint = o.log_conditionals(padded)[:, :m].sum(-1).exp()  # p(x_<m): the conditionals read only the prefix
    product = o.token_marginals()[:m][torch.arange(m), cells].prod(-1)
    return cells, joint, product


def _counts(tokens: torch.Tensor, V: int, m: int) -> torch.Tensor:
    index = (tokens[:, :m] * V ** torch.arange(m - 1, -1, -1)).sum(-1)
    return torch.bincount(index, minlength=V**m).to(F64)


def check_c14(ctx: Context) -> list[ClaimResult]:
    """C14: the Evo controller's limits decode as Staircase(1) and Synchronous() with K steps, token for token (any
    denoiser); along them the exact oracle's decodings follow p(x) and, at K = 1, prod_i p(x_i) (alpha(1) = 0)."""
    model, L, K = ctx.model, ctx.settings.length, SYNC_STEPS
    V = ctx.oracle.embeddings.shape[0]
    seed = ctx.settings.seed * 1000 + 140
    worst, dt_max, parts = 0.0, 0.0, []
    for name, evo, path, steps in (("AR", ar_limit(), Staircase(1), None),
                                   (f"sync K={K}", synchronous_limit(L, K), Synchronous(), K)):
        for solver in (None, "ddim"):
            a = generate(model, L, path, steps=steps, batch=256, solver=solver,
                         generator=torch.Generator().manual_seed(seed))
            b = generate(model, L, evo, batch=256, solver=solver, generator=torch.Generator().manual_seed(seed))
            frac, dt = _differences(a, b)
            worst, dt_max = max(worst, frac), max(dt_max, dt)
            parts.append(f"{name}/{solver or 'token'}: {frac:.3g} differ, {b.nfe} vs {a.nfe} calls")
    limits = ClaimResult("C14", f"EvoController(window=1, steps 1) vs Staircase(1); (window=L, steps 1/{K}, "
                         f"min_commits=0) vs Synchronous() K={K}; token and ddim solvers, same seed: fraction of "
                         "sequences decoded differently", worst, f"0 (times within {TIME_ATOL:g})",
                         verdict(worst == 0.0 and dt_max <= TIME_ATOL),
                         f"max |t_evo - t_path| = {dt_max:.3g}; " + "; ".join(parts))
    m = max(k for k in range(1, L + 1) if V**k <= MAX_CELLS) if V <= MAX_CELLS else 1
    _, joint, product = _prefix_laws(ctx, m)
    g = ctx.gen(14)
    ar = _counts(generate(model, L, ar_limit(), batch=SAMPLES, generator=g).tokens, V, m)
    sync = _counts(generate(model, L, synchronous_limit(L, 1), batch=SAMPLES, generator=g).tokens, V, m)
    tests = {"AR vs p(x)": chi_square(ar, joint), "K=1 vs prod_i p(x_i)": chi_square(sync, product)}
    power = {"AR vs prod_i p(x_i)": chi_square(ar, product)[2], "K=1 vs p(x)": chi_square(sync, joint)[2]}
    lowest = min(p for _, _, p in tests.values())
    first = "the whole sequence" if m == L else f"the first {m} tokens"
    note = ("; ".join(f"{k}: chi2 = {s:.3g}, df = {d}, p = {p:.3g}" for k, (s, d, p) in tests.items())
            + f" ({SAMPLES} decodings each, law of {first}, {V**m} cells); the test's power, each sample against "
            + "the other law: " + ", ".join(f"{k} p = {p:.3g}" for k, p in power.items()))
    laws = needing_pure_noise(ctx, ClaimResult(
        "C14", f"Evo's AR limit vs p(x) and its K=1 synchronous limit vs prod_i p(x_i): the smaller chi-square "
        f"p-value ({SAMPLES} decodings each)", lowest, f">= {P_MIN:g}", verdict(lowest >= P_MIN), note))
    if laws.verdict == "n/a":
        laws.note = f"{laws.note} ({note})"
    return [limits, laws]
