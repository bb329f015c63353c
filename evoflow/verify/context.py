"""The setting of a verification run: sizes, the exact oracle, the denoiser under test, verdicts (THEORY section 7).

A :class:`Context` holds two objects. ``oracle`` is the truth: its ``log p(x)``, ``log p_tau(z)``,
marginals and AR conditionals are exact. ``model`` is the denoiser the claims are checked on: the
oracle itself by default, or any transform of it (a tempered posterior, a schedule with a wrong
derivative), so that a check whose claim depends on the exact posterior can be seen to fail.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from evoflow.oracles import MarkovOracle
from evoflow.paths import Rolling, Staircase, Synchronous
from evoflow.process import check_denoiser
from evoflow.schedules import get_schedule, schedule_names

__all__ = ["ClaimResult", "Context", "Settings", "make_context", "tiny_transformer"]
F64 = torch.float64


@dataclass
class Settings:
    """Problem size and randomness of a verification run (THEORY section 7).

    ``samples``: common-noise draws per sequence in the step-KL sums of C4; ``flow_rtol``: tolerance of the
    adaptive solver in the flow checks (C2, C11), whose thresholds are ``max(1e-7, 1e3 flow_rtol)``.
    """

    vocab: int = 3
    length: int = 3
    dim: int = 2
    schedule: str = "cosine"
    seed: int = 0
    samples: int = 16
    flow_rtol: float = 1e-10


@dataclass
class ClaimResult:
    """One row of the verification table; ``verdict`` is ``pass``, ``FAIL`` or ``n/a`` (C1-C14).

    ``note`` says why a row is ``n/a`` (or what its numbers mean), computed from the run.
    """

    claim: str
    quantity: str
    measured: float
    expected: str
    verdict: str
    note: str = ""


@dataclass
class Context:
    """Truth (``oracle``), the denoiser under test (``model``), data, the exact prior, the figures' series (C1-C14)."""

    settings: Settings
    oracle: MarkovOracle
    model: object
    x: torch.Tensor  # (N, L) data: every sequence when V^L is small, else samples
    weights: torch.Tensor  # (N,) p(x) for enumerated data, uniform 1/N for samples
    alpha1: float  # alpha(1) of the model's schedule: 0 means tokens at t = 1 carry no information
    prior: Callable | None  # exact log p_1(z) when alpha(1) > 0; None: N(0, sigma(1)^2 I) is exact
    series: dict = field(default_factory=dict)
    observations: list[str] = field(default_factory=list)  # measured statements that are no THEORY claim

    def gen(self, k: int) -> torch.Generator:
        """A generator seeded from the run's seed and the check's own number k."""
        return torch.Generator().manual_seed(self.settings.seed * 1000 + k)

    @property
    def informative_noise(self) -> str:
        """Empty when alpha(1) = 0; else why a claim that needs pure-noise tokens at t = 1 cannot run."""
        if self.alpha1 == 0.0:
            return ""
        one = torch.tensor(1.0, dtype=F64)
        snr1 = float(self.model.schedule.snr(one))
        return (f"needs alpha(1) = 0, but {self.settings.schedule} has alpha(1) = {self.alpha1:.3g} "
                f"(SNR(1) = {snr1:.3g}): tokens at t = 1 still carry information about x")


def verdict(ok: bool) -> str:
    """``pass`` or ``FAIL`` (a NaN comparison is False, so an unmeasurable quantity fails)."""
    return "pass" if ok else "FAIL"


def needing_pure_noise(ctx: Context, row: ClaimResult) -> ClaimResult:
    """Mark a row whose statement needs alpha(1) = 0 as n/a (with the reason) when the schedule breaks it."""
    if not ctx.informative_noise:
        return row
    row.verdict, row.note = "n/a", ctx.informative_noise
    row.expected = f"{row.expected} (n/a: alpha(1) = {ctx.alpha1:.3g})"
    return row


def _count(value: object, name: str, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{why}, got {value!r}")
    return value


def check_settings(s: Settings) -> Settings:
    """Raise ``ValueError`` naming the field unless the settings describe a run whose claims are not vacuous."""
    _count(s.vocab, "vocab", 2, " (with one token every posterior is certain and C5-C9 are vacuous)")
    _count(s.length, "length", 2, " (with one token every path is the same and C2, C8 are vacuous)")
    _count(s.dim, "dim", 1)
    _count(s.samples, "samples", 2, " (an average needs draws)")
    if s.schedule not in schedule_names():
        raise ValueError(f"schedule must be one of {', '.join(schedule_names())}, got {s.schedule!r}")
    if not isinstance(s.seed, int) or isinstance(s.seed, bool):
        raise ValueError(f"seed must be an integer, got {s.seed!r}")
    if not (isinstance(s.flow_rtol, float) and 0 < s.flow_rtol < 1e-3):
        raise ValueError(f"flow_rtol must be a float in (0, 1e-3), got {s.flow_rtol!r}")
    return s


def make_context(s: Settings, transform: Callable[[MarkovOracle], object] | None = None) -> Context:
    """A random Markov oracle and its data for the settings; ``transform(oracle)`` is the denoiser under test.

    The default is the oracle itself. The prior is exact either way: ``N(0, sigma(1)^2 I)`` when alpha(1) = 0,
    the oracle's own ``log p_1`` otherwise (THEORY section 5).
    """
    check_settings(s)
    g = torch.Generator().manual_seed(s.seed)
    oracle = MarkovOracle.random(s.vocab, s.length, s.dim, get_schedule(s.schedule), g)
    model = oracle if transform is None else transform(oracle)
    check_denoiser(model, "transform(oracle)")
    if model.embeddings.shape != oracle.embeddings.shape:
        raise ValueError("transform(oracle) must keep the oracle's embedding table")
    if s.vocab**s.length <= 512:
        x = torch.tensor(list(itertools.product(range(s.vocab), repeat=s.length)))
        w = oracle.log_prob(x).exp()
    else:
        x = oracle.sample(64, generator=g)
        w = torch.full((64,), 1 / 64, dtype=F64)
    alpha1 = float(model.schedule.alpha(torch.tensor(1.0, dtype=F64)))
    return Context(s, oracle, model, x, w, alpha1, prior=None if alpha1 == 0.0 else oracle.log_marginal)


def tiny_transformer(ctx: Context, generator: torch.Generator):
    """The tiny 3-layer Transformer of the C12 and C13 rows (float32, its own linear schedule), with its time
    conditioning made live (time MLP, per-layer shift and gate offsets moved by ``generator``), as after training.

    The weights depend only on the run's seed and ``generator``: C13 rebuilds C12's model from ``ctx.gen(12)``.
    """
    from evoflow.nn import EvoTransformer, get_config

    torch.manual_seed(ctx.settings.seed)
    model = EvoTransformer(get_config("tiny", layers=3)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("time.") or name.endswith(("time_shift", "time_gate")):
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return model


def some(ctx: Context, n: int = 4) -> torch.Tensor:
    """``n`` sequences drawn from the oracle with the run's fixed generator."""
    return ctx.oracle.sample(n, generator=ctx.gen(99))


def paths(length: int) -> list[tuple[object, int]]:
    """The three reference paths with the number of steps that puts one step between knots (THEORY section 4)."""
    return [(Synchronous(), 1), (Staircase(1), length), (Rolling(2.0), length + 1)]


def z_score(diff: torch.Tensor, se: torch.Tensor) -> torch.Tensor:
    """``diff / se`` with a zero standard error allowed only for a zero difference (else inf)."""
    return torch.where(se > 0, diff / se.clamp_min(1e-300), torch.where(diff == 0, 0.0, math.inf * diff.sign()))
