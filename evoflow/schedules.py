"""Noise schedules: alpha(t), sigma(t) on [0, 1] and the quantities derived from them.

Every token i is noised independently, ``q(z_i | x_i, t_i) = N(alpha(t_i) e_{x_i}, sigma(t_i)^2 I)``
(THEORY section 2). A schedule is a small object: subclasses give ``alpha``, ``sigma``, their
t-derivatives and the inverse of logSNR; the base class derives SNR and logSNR in forms that
stay free of NaN at both ends (``SNR(0) = inf`` and ``alpha(1) = 0`` are values, not accidents).

Derivation: proofs/p01_continuity.md (the schedule enters C1 only through these functions).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "Cosine",
    "Linear",
    "LogLinear",
    "Schedule",
    "check_times",
    "get_schedule",
    "schedule_names",
]


def check_times(t: Tensor, name: str = "t") -> Tensor:
    """Raise ``ValueError`` naming ``name`` unless every entry of ``t`` is a finite time in [0, 1].
    (THEORY section 1)"""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):  # NaN fails both comparisons
        bad = t[~((t >= 0) & (t <= 1))].flatten()[0].item()
        raise ValueError(f"{name} must lie in [0, 1] and be finite; found {bad}")
    return t


class Schedule:
    """A noise schedule ``alpha(t)`` (decreasing) and ``sigma(t)`` (increasing) on [0, 1].

    Subclasses implement ``alpha``, ``sigma``, ``dalpha``, ``dsigma`` and ``t_of_log_snr``;
    everything else is derived here:

        SNR(t) = alpha^2 / sigma^2,   logSNR = 2 (log alpha - log sigma),
        SNR'   = 2 alpha (alpha' sigma - alpha sigma') / sigma^3,
        logSNR' = 2 (alpha' / alpha - sigma' / sigma).

    The forms are chosen so that ``alpha(1) = 0`` gives ``SNR'(1) = 0`` and ``sigma(0) = 0``
    gives ``SNR(0) = inf`` rather than NaN. Inputs are tensors of times in [0, 1] of any shape;
    outputs have the same shape and dtype. Derivation: proofs/p01_continuity.md.
    """

    name: str = "schedule"

    def alpha(self, t: Tensor) -> Tensor:
        """Signal coefficient ``alpha(t)``."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """Noise standard deviation ``sigma(t)``."""
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        """``d alpha / dt``."""
        raise NotImplementedError

    def dsigma(self, t: Tensor) -> Tensor:
        """``d sigma / dt``."""
        raise NotImplementedError

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        """The time at which ``logSNR(t) = lam`` (the inverse of ``log_snr``)."""
        raise NotImplementedError

    def snr(self, t: Tensor) -> Tensor:
        """``SNR(t) = alpha(t)^2 / sigma(t)^2`` (``inf`` where sigma = 0)."""
        return self.alpha(t) ** 2 / self.sigma(t) ** 2

    def log_snr(self, t: Tensor) -> Tensor:
        """``logSNR(t) = 2 log alpha(t) - 2 log sigma(t)`` (``+inf`` at sigma = 0, ``-inf`` at alpha = 0)."""
        return 2.0 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def dsnr(self, t: Tensor) -> Tensor:
        """``d SNR / dt = 2 alpha (alpha' sigma - alpha sigma') / sigma^3`` (<= 0)."""
        a, s = self.alpha(t), self.sigma(t)
        return 2.0 * a * (self.dalpha(t) * s - a * self.dsigma(t)) / s**3

    def dlog_snr(self, t: Tensor) -> Tensor:
        """``d logSNR / dt = 2 (alpha'/alpha - sigma'/sigma)`` (< 0, ``-inf`` where alpha or sigma is 0)."""
        return 2.0 * (self.dalpha(t) / self.alpha(t) - self.dsigma(t) / self.sigma(t))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class Linear(Schedule):
    """Rectified-flow schedule ``alpha = 1 - t``, ``sigma = t`` (THEORY section 2).

    Here the velocity of C1 is ``u = (z - ehat) / t``. Derivation: proofs/p01_continuity.md.
    """

    name = "linear"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t.clone()

    def dalpha(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -1.0)

    def dsigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        # (1 - t) / t = exp(lam / 2)  =>  t = sigmoid(-lam / 2)
        return torch.sigmoid(-0.5 * lam)


class Cosine(Schedule):
    """Variance-preserving cosine schedule ``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``.

    ``alpha`` is evaluated as ``sin(pi (1 - t) / 2)`` so that ``alpha(1) = 0`` exactly in floating
    point. Derivation: proofs/p01_continuity.md.
    """

    name = "cosine"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * (1.0 - t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def dalpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * self.sigma(t)

    def dsigma(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * self.alpha(t)

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        # cot(pi t / 2) = exp(lam / 2)  =>  t = (2 / pi) atan(exp(-lam / 2))
        return (2.0 / math.pi) * torch.atan(torch.exp(-0.5 * lam))


class LogLinear(Schedule):
    """Variance-preserving schedule whose logSNR falls linearly from ``gamma_max`` to ``gamma_min``.

        logSNR(t) = gamma_max + (gamma_min - gamma_max) t,
        alpha^2 = sigmoid(logSNR),   sigma^2 = sigmoid(-logSNR).

    SNR is finite at both ends, so no truncation is needed, but ``alpha(1) > 0``: the prior
    ``N(0, sigma(1)^2 I)`` is then approximate (KL ~ ``sigmoid(gamma_min) ||e||^2 / 2``).
    Derivation: proofs/p01_continuity.md.
    """

    name = "loglinear"

    def __init__(self, gamma_min: float = -12.0, gamma_max: float = 12.0):
        if not (math.isfinite(gamma_min) and math.isfinite(gamma_max)):
            raise ValueError(f"gamma_min and gamma_max must be finite, got {gamma_min}, {gamma_max}")
        if not gamma_max > gamma_min:
            raise ValueError(f"gamma_max must exceed gamma_min, got gamma_max={gamma_max}, gamma_min={gamma_min}")
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)

    def _lam(self, t: Tensor) -> Tensor:
        return self.gamma_max + (self.gamma_min - self.gamma_max) * t

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sqrt(torch.sigmoid(self._lam(t)))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(torch.sigmoid(-self._lam(t)))

    def dalpha(self, t: Tensor) -> Tensor:
        lam = self._lam(t)
        return 0.5 * self.alpha(t) * torch.sigmoid(-lam) * (self.gamma_min - self.gamma_max)

    def dsigma(self, t: Tensor) -> Tensor:
        lam = self._lam(t)
        return -0.5 * self.sigma(t) * torch.sigmoid(lam) * (self.gamma_min - self.gamma_max)

    def log_snr(self, t: Tensor) -> Tensor:
        return self._lam(t)

    def dlog_snr(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.gamma_min - self.gamma_max)

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        return (lam - self.gamma_max) / (self.gamma_min - self.gamma_max)

    def __repr__(self) -> str:
        return f"LogLinear(gamma_min={self.gamma_min}, gamma_max={self.gamma_max})"


_SCHEDULES: dict[str, type[Schedule]] = {"linear": Linear, "cosine": Cosine, "loglinear": LogLinear}


def schedule_names() -> list[str]:
    """Names accepted by :func:`get_schedule` (THEORY section 2)."""
    return sorted(_SCHEDULES)


def get_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by name (``linear``, ``cosine``, ``loglinear``); THEORY section 2.

    Keyword arguments go to the schedule's constructor (e.g. ``gamma_min`` for loglinear).
    """
    if isinstance(name, Schedule):
        return name
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule name {name!r}; available: {', '.join(schedule_names())}")
    return _SCHEDULES[name](**kwargs)
