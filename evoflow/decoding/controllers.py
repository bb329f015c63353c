"""Decoding controllers: a fixed path, and Evo's adaptive path chosen from the model's uncertainty (THEORY section 4).

A controller proposes the next per-token time vector after each network call (the
:class:`evoflow.solve.Controller` interface); the solve loop moves the latents and commits tokens
that reach ``t = 0``. :func:`path_controller` walks the grid of any :class:`~evoflow.paths.Path` over
the generated positions (prompt columns stay at 0). :class:`EvoController` moves every token of an
active window by

    Delta_i = min_step + (max_step - min_step) (1 - u_i)^kappa,      t_i' = max(0, t_i - Delta_i),

``u_i`` in [0, 1] the token's uncertainty (normalised entropy, ``1 - max p`` or the model's time
estimate; computed at the window's tokens only), takes no step shorter than ``min_move``, commits a
token when it reaches 0 or its largest probability reaches ``commit_threshold``, keeps the frontier
``t_i <= t_{i+1}`` when asked, commits at least ``min_commits`` tokens of every unfinished sequence per
call, and commits everything left at the call that reaches ``max_calls``.
Limits (C14): ``window=1, min_step=max_step=1`` is AR decoding, token for token;
``window >= L, min_step=max_step=1/K, min_commits=0`` is synchronous K-step decoding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from evoflow.arguments import as_float, as_int
from evoflow.field import Field
from evoflow.paths import Path, Synchronous, as_grid
from evoflow.solve import Controller, GridController
from evoflow.solvers.base import State

__all__ = ["EvoController", "path_controller", "uncertainty_of", "window_index", "window_uncertainty"]

UNCERTAINTIES = ("entropy", "maxprob", "time_head")
_SNAP = 1e-12  # times within this of 0 are 0, as grids snap (THEORY section 4)


def path_controller(path: Path, steps: int | None, tau0: Tensor) -> GridController:
    """The grid of ``path`` over the generated positions of ``tau0`` (B, L) (prompt columns at 0 throughout);
    ``steps`` None: one jump per block for a staircase, one step per knot for rolling, one per token for
    synchronous (THEORY section 4)."""
    B, L = tau0.shape
    gen = tau0[0] > 0  # generated positions (the prompt is shared by the batch's layout)
    n = int(gen.sum())
    if steps is None:  # one step per smooth piece (between knots); synchronous: one per token
        pieces = 1 + sum(1 for k in path.knot_clocks(n) if k < path.clock_end(n))
        steps = n if isinstance(path, Synchronous) else pieces
    grid = as_grid(path, n, steps, B).to(tau0.device)  # (K+1, B, n)
    full = torch.zeros((grid.shape[0], B, L), dtype=torch.float64, device=tau0.device)
    full[:, :, gen] = grid
    return GridController(full)


class EvoController:
    """Evo's adaptive decoding path (THEORY section 4, C14): per-token steps from uncertainty in an active window.

    ``window`` tokens (the leftmost not yet committed) move per call; each by
    ``min_step + (max_step - min_step) (1 - u)^kappa`` with ``u`` from ``uncertainty``, except that a step
    shorter than ``min_move`` is not taken (the token keeps its time: an unsure token stays at pure noise
    ``t = 1`` rather than drift off it by a step too small to inform it; 0: every step is taken); a token commits at
    ``t = 0`` or when its largest probability reaches ``commit_threshold`` (None: never early);
    ``frontier`` keeps every token at least as far along as its right neighbour (a token is slowed to
    its left neighbour's time, never forced ahead); every unfinished sequence commits at least
    ``min(min_commits, window)`` tokens per call, inside the window (the leftmost under the frontier, else
    the most confident: the progress guarantee, as Fast-dLLM commits its top-1); the call that reaches
    ``max_calls`` commits everything left, so no sequence ever takes more calls. Reusable: :meth:`begin`
    starts one decoding.

    The defaults are the setting study e04 recommends (experiments/e04_adaptive_decoding): with
    ``min_step = 0`` and ``kappa = 16`` only confident tokens move between commits, the leftmost open token
    commits when nothing else does, and a token commits early at probability 0.99; on e04's oracle
    (L = 32) that is near AR quality at 0.70 L calls. ``min_move = 0.01`` comes from e05 (the trained model):
    without it the uncertain tokens of the window drift off t = 1 by steps of 1e-11 to 1e-6 and the samples'
    perplexity under the AR baseline is 6x AR's; with it Evo draws AR's tokens there, and e04 is unchanged
    within its sampling floor.
    """

    def __init__(self, window: int = 32, min_step: float = 0.0, max_step: float = 1.0, kappa: float = 16.0,
                 uncertainty: str = "entropy", frontier: bool = True, commit_threshold: float | None = 0.99,
                 max_calls: int | None = None, min_commits: int = 1, min_move: float = 0.01):
        self.window = as_int(window, "window", minimum=1)
        self.min_step = as_float(min_step, "min_step", low=0.0, high=1.0)
        self.max_step = as_float(max_step, "max_step", low=0.0, high=1.0, low_open=True)
        if self.min_step > self.max_step:
            raise ValueError(f"min_step ({self.min_step:g}) must not exceed max_step ({self.max_step:g})")
        self.kappa = as_float(kappa, "kappa", low=0.0, low_open=True)
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty must be one of {', '.join(UNCERTAINTIES)}, got {uncertainty!r}")
        self.uncertainty = uncertainty
        if not isinstance(frontier, bool):
            raise TypeError(f"frontier must be True or False, got {frontier!r}")
        self.frontier = frontier
        self.commit_threshold = None if commit_threshold is None else as_float(
            commit_threshold, "commit_threshold", low=0.0, high=1.0, low_open=True)
        self.max_calls = None if max_calls is None else as_int(max_calls, "max_calls", minimum=1)
        self.min_commits = as_int(min_commits, "min_commits", minimum=0)
        self.min_move = as_float(min_move, "min_move", low=0.0, high=1.0)
        if (self.min_step == 0 or self.min_step < self.min_move) and self.min_commits == 0 and self.max_calls is None:
            raise ValueError("min_step: with min_step = 0 (or below min_move), min_commits = 0 and no max_calls a "
                             "decoding may never finish; give min_step > 0 (and >= min_move), min_commits >= 1 "
                             "or max_calls")

    def begin(self, tau0: Tensor) -> Controller:
        """A fresh controller for one decoding that starts at ``tau0`` (B, L) (prompt at 0, the rest at 1)."""
        return _EvoRun(self, tau0)

    def __repr__(self) -> str:
        return (f"EvoController(window={self.window}, min_step={self.min_step:g}, max_step={self.max_step:g}, "
                f"kappa={self.kappa:g}, uncertainty={self.uncertainty!r}, frontier={self.frontier}, "
                f"commit_threshold={self.commit_threshold}, max_calls={self.max_calls}, "
                f"min_commits={self.min_commits}, min_move={self.min_move:g})")


def uncertainty_of(kind: str, logits: Tensor | None, time: Tensor | None) -> tuple[Tensor, Tensor]:
    """(u, max p), both (B, L) in float64: ``u`` the normalised entropy ``H(p) / log V``, ``1 - max p``, or the
    model's time estimate clipped to [0, 1] (THEORY section 8's time head)."""
    if logits is None:
        raise ValueError("denoiser: the Evo controller needs per-token probabilities (logits)")
    logp = torch.log_softmax(logits.to(torch.float64), -1)
    p = logp.exp()
    top = p.max(-1).values
    if kind == "entropy":
        u = -(p * logp).nan_to_num().sum(-1) / math.log(max(p.shape[-1], 2))
    elif kind == "maxprob":
        u = 1.0 - top
    else:
        if time is None:
            raise ValueError("uncertainty: 'time_head' needs a denoiser with a time estimate (output.time)")
        u = time.to(torch.float64)
    return u.clamp(0.0, 1.0), top


def window_index(open_: Tensor, window: int) -> Tensor:
    """Per row of ``open_`` (B, L) bool, the positions (B, min(window, L)) of its first ``window`` open tokens
    (the Evo controller's active window, THEORY section 4), in order; ``L`` where a row has fewer (no host
    read: the k-th open token is the first position whose running count of open tokens reaches k)."""
    B, L = open_.shape
    count = open_.long().cumsum(-1)  # non-decreasing per row
    k = torch.arange(1, min(window, L) + 1, device=open_.device).expand(B, -1).contiguous()
    return torch.searchsorted(count, k)


def window_uncertainty(kind: str, out, open_: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """:func:`uncertainty_of` of the output ``out`` computed only at the first ``window`` open tokens of each row
    (the active window, THEORY section 4), as (u, max p) (B, L) in float64; elsewhere u = 1 and max p = 0
    (values the controller never reads). O(B window V), not O(B L V)."""
    B, L = open_.shape
    idx = window_index(open_, window)  # (B, W), L where absent
    at = idx.clamp_max(L - 1)
    logits = None if out.logits is None else out.logits.gather(1, at[..., None].expand(-1, -1, out.logits.shape[-1]))
    time = None if out.time is None else out.time.gather(1, at)
    u_w, top_w = uncertainty_of(kind, logits, time)
    u = torch.ones((B, L + 1), dtype=torch.float64, device=open_.device).scatter_(1, idx, u_w)  # column L: absent
    top = torch.zeros((B, L + 1), dtype=torch.float64, device=open_.device).scatter_(1, idx, top_w)
    return u[:, :L], top[:, :L]


class _EvoRun(Controller):
    """One decoding under an :class:`EvoController`; counts each sequence's calls for ``max_calls``."""

    def __init__(self, cfg: EvoController, tau0: Tensor):
        self.cfg, self.tau0 = cfg, tau0.to(torch.float64)
        self.calls = torch.zeros(tau0.shape[0], dtype=torch.long, device=tau0.device)
        self._seen: tuple[Tensor, bool] | None = None  # (t, whether a token is open), from horizon's host read

    def start(self) -> Tensor:
        return self.tau0

    def horizon(self, t: Tensor) -> int:
        """Positions the next call must cover: every token not pure noise and the active window (C13)."""
        open_ = t > 0
        reach = (t < 1) | (open_ & (open_.long().cumsum(-1) <= self.cfg.window))
        at = torch.arange(1, t.shape[1] + 1, device=t.device)
        n, any_open = torch.stack([torch.where(reach.any(0), at, 1).max(), open_.any().long()]).tolist()
        self._seen = (t, bool(any_open))  # one host read serves this call's horizon and next's stop test
        return n

    def _any_open(self, t: Tensor) -> bool:
        seen = self._seen
        return seen[1] if seen is not None and seen[0] is t else bool((t > 0).any())

    def next(self, t: Tensor, state: State, field: Field) -> Tensor | None:
        cfg, open_ = self.cfg, t > 0  # (B, L) tokens still to decode
        if not self._any_open(t):
            return None
        out = field(state.z, t).output  # the call the step then reuses
        u, top = self._uncertainty(out, open_)
        rank = open_.long().cumsum(-1)  # 1 for the leftmost open token
        active = open_ & (rank <= cfg.window)
        delta = cfg.min_step + (cfg.max_step - cfg.min_step) * (1.0 - u) ** cfg.kappa
        if cfg.min_move > 0:
            delta = torch.where(delta >= cfg.min_move, delta, 0.0)
        new = torch.where(active, t - delta, t)
        if cfg.commit_threshold is not None:
            new = torch.where(active & (top >= cfg.commit_threshold), 0.0, new)
        new = torch.where(new < _SNAP, 0.0, new)
        if cfg.frontier:
            new = torch.cummax(new, dim=-1).values  # slow a token to its left neighbour's time
        new = self._force(new, t, active, top)
        self.calls += open_.any(-1)
        return torch.minimum(new, t)

    def _uncertainty(self, out, open_: Tensor) -> tuple[Tensor, Tensor]:
        """(u, max p) (B, L) at the active window (what :meth:`next` reads), from the call's output."""
        return window_uncertainty(self.cfg.uncertainty, out, open_, self.cfg.window)

    def _force(self, new: Tensor, t: Tensor, active: Tensor, top: Tensor) -> Tensor:
        """At least ``min_commits`` commits per unfinished sequence; everything at the ``max_calls``-th call."""
        cfg, open_ = self.cfg, t > 0
        if cfg.max_calls is not None:
            last = (self.calls + 1 >= cfg.max_calls)[:, None]
            new = torch.where(last & open_, 0.0, new)
        if cfg.min_commits == 0:
            return new
        committed = ((new == 0) & open_).sum(-1, keepdim=True)  # (B, 1)
        need = (cfg.min_commits - committed).clamp_min(0)  # 0 where enough commit already: nothing is chosen
        if cfg.frontier:  # the leftmost open tokens of the window: their left neighbours are committed already
            order = open_.long().cumsum(-1)
            chosen = open_ & (order <= committed + need) & (order <= cfg.window)
        else:  # the most confident active tokens not yet committing
            score = torch.where(active & (new > 0), top, -1.0)
            rank = score.argsort(-1, descending=True).argsort(-1)
            chosen = (rank < need) & (score >= 0)
        return torch.where(chosen, 0.0, new)
