"""Decoding paths through the time cube, as continuous maps and as discrete grids.

A path is ``s -> tau(s)`` for s in [0, 1]: every component non-increasing, ``tau(0) = 1``,
``tau(1) = 0`` (prompt tokens sit at 0 throughout). AR decoding is a staircase through the cube,
diffusion the diagonal (THEORY section 4, claim C2). A grid ``T`` of shape ``(K+1, L)`` samples a
path at K+1 values of s, with ``T[0] = 1``, ``T[K] = 0``, rows non-increasing, and puts points on
the path's knots (where it is not smooth) whenever the step budget allows.

Each path is parametrised by a *clock* ``p = s P`` in which its knots have simple values
(block index for a staircase, token index for a rolling window), so that grids hit knots
exactly in floating point. Derivation: proofs/p02_path_invariance.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from evoflow.arguments import as_float, as_int

__all__ = [
    "Path",
    "Rolling",
    "Staircase",
    "Synchronous",
    "as_grid",
    "grid_times",
    "log_snr_spacing",
    "refine",
    "to_times",
    "validate_grid",
]

_SNAP = 1e-12  # grid values this close to 0 or 1 are snapped onto the end (rounding at knots)


def _check_length(length: int) -> int:
    return as_int(length, "length", minimum=1)


def _check_steps(steps: int) -> int:
    return as_int(steps, "steps", minimum=1)


def _check_s(s: float | Sequence[float] | Tensor) -> Tensor:
    """Path parameters ``s`` as a float64 tensor of the same shape, every entry in [0, 1]."""
    kind = "a real number, a sequence or a tensor of path parameters in [0, 1]"
    if isinstance(s, bool) or str(getattr(s, "dtype", "")).removeprefix("torch.") == "bool":
        raise TypeError(f"s must be {kind}, got booleans")
    if isinstance(s, Tensor) and s.is_complex():
        raise TypeError(f"s must be {kind}, got dtype {s.dtype}")
    try:
        s = s.to(torch.float64) if isinstance(s, Tensor) else torch.as_tensor(s, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"s must be {kind}, got {type(s).__name__}") from None
    inside = (s >= 0) & (s <= 1)  # NaN fails both comparisons
    if not bool(inside.all()):
        raise ValueError(f"s must lie in [0, 1] and be finite; found {s[~inside].flatten()[0].item()}")
    return s


def _allocate(widths: list[float], steps: int) -> list[int]:
    """Split ``steps`` over intervals: one each, the rest in proportion to width (largest remainder)."""
    n = len(widths)
    total = sum(widths)
    extra = steps - n
    shares = [extra * w / total for w in widths]
    counts = [1 + int(x) for x in shares]
    order = sorted(range(n), key=lambda j: -(shares[j] - int(shares[j])))
    for j in order[: steps - sum(counts)]:
        counts[j] += 1
    return counts


class Path:
    """A decoding path ``s -> tau(s)`` through the time cube (THEORY section 4, claim C2).

    Subclasses give the clock length ``P`` (``s = p / P``), the time of every token as a function
    of the clock, its clock derivative, and the interior knots in clock units.
    Derivation: proofs/p02_path_invariance.md.
    """

    def clock(self, length: int) -> float:
        """Total clock length ``P`` for a sequence of ``length`` tokens."""
        return 1.0

    def knot_clocks(self, length: int) -> list[float]:
        """Clock values in ``(0, P)`` where the path is not smooth, sorted."""
        return []

    def clock_end(self, length: int) -> float:
        """Clock value from which every token is at 0; grids spend no step beyond it."""
        return self.clock(length)

    def _tau_clock(self, p: Tensor, length: int) -> Tensor:  # p (n,) -> (n, L)
        raise NotImplementedError

    def _dtau_dclock(self, p: Tensor, length: int) -> Tensor:  # p (n,) -> (n, L)
        raise NotImplementedError

    def tau(self, s: float | Sequence[float] | Tensor, length: int) -> Tensor:
        """Token times ``tau(s)`` in float64, of shape ``s.shape + (length,)``.

        ``s`` is a real number, a sequence or a tensor of path parameters in [0, 1]: ``s`` of
        shape ``(n,)`` gives ``(n, length)``, a scalar ``s`` one time vector ``(length,)``.
        """
        length = _check_length(length)
        s = _check_s(s)
        P = self.clock(length)
        return self._tau_clock(s.reshape(-1) * P, length).clamp(0.0, 1.0).reshape(*s.shape, length)

    def dtau(self, s: float | Sequence[float] | Tensor, length: int) -> Tensor:
        """``d tau / ds`` (right derivative at knots), entries <= 0.

        ``s`` as for :meth:`tau`; the result has shape ``s.shape + (length,)``.
        """
        length = _check_length(length)
        s = _check_s(s)
        P = self.clock(length)
        return (self._dtau_dclock(s.reshape(-1) * P, length) * P).reshape(*s.shape, length)

    def knots(self, length: int) -> Tensor:
        """Interior knots of the path in s, shape ``(n_knots,)``."""
        length = _check_length(length)
        P = self.clock(length)
        return torch.tensor([k / P for k in self.knot_clocks(length)], dtype=torch.float64)

    def check_steps(self, length: int, steps: int) -> None:
        """Raise ``ValueError`` if this path cannot be gridded with ``steps`` steps."""
        _check_steps(steps)

    def grid_clocks(self, length: int, steps: int) -> Tensor:
        """The ``steps + 1`` clock values of the grid: knots first, the rest spread by width."""
        P = self.clock_end(length)
        ends = [0.0, *(k for k in self.knot_clocks(length) if k < P), P]
        if steps < len(ends) - 1:  # budget too small for every knot: uniform in the clock
            return torch.linspace(0.0, P, steps + 1, dtype=torch.float64)
        counts = _allocate([b - a for a, b in itertools.pairwise(ends)], steps)
        pieces = [
            a + (b - a) * torch.arange(m, dtype=torch.float64) / m
            for a, b, m in zip(ends[:-1], ends[1:], counts, strict=True)
        ]
        return torch.cat([*pieces, torch.tensor([P], dtype=torch.float64)])

    def grid(self, length: int, steps: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """Per-token time grid of shape ``(steps + 1, length)``, from ones to zeros, knots included.

        ``steps`` is the number of grid intervals, i.e. network calls for a one-evaluation
        solver. Rows are non-increasing; values within 1e-12 of an end are snapped onto it.
        """
        length, steps = _check_length(length), _check_steps(steps)
        self.check_steps(length, steps)
        T = self._tau_clock(self.grid_clocks(length, steps), length).clamp(0.0, 1.0)
        T = torch.where(T < _SNAP, 0.0, torch.where(T > 1.0 - _SNAP, 1.0, T))
        T[0], T[-1] = 1.0, 0.0
        return T.to(dtype)


class Synchronous(Path):
    """Diffusion: every token follows ``t_i(s) = 1 - s`` (THEORY section 4).

    Derivation: proofs/p02_path_invariance.md.
    """

    def _tau_clock(self, p: Tensor, length: int) -> Tensor:
        return (1.0 - p)[:, None].expand(-1, length).clone()

    def _dtau_dclock(self, p: Tensor, length: int) -> Tensor:
        return torch.full((p.shape[0], length), -1.0, dtype=torch.float64)

    def __repr__(self) -> str:
        return "Synchronous()"


class Staircase(Path):
    """Blocks of ``block`` tokens go 1 -> 0 left to right while the rest wait (THEORY section 4).

    ``block = 1`` with one step per token is AR; ``block = L`` is synchronous diffusion; between
    is block (semi-AR) diffusion. The clock counts blocks: block j moves for p in [j, j + 1].
    ``steps`` must be a multiple of the number of blocks. Derivation: proofs/p02_path_invariance.md.
    """

    def __init__(self, block: int = 1):
        self.block = as_int(block, "block", minimum=1)

    def n_blocks(self, length: int) -> int:
        """Number of blocks, ``ceil(length / block)``."""
        return -(-length // self.block)

    def clock(self, length: int) -> float:
        return float(self.n_blocks(length))

    def knot_clocks(self, length: int) -> list[float]:
        return [float(j) for j in range(1, self.n_blocks(length))]

    def check_steps(self, length: int, steps: int) -> None:
        steps = _check_steps(steps)
        n = self.n_blocks(_check_length(length))
        if steps % n:
            raise ValueError(
                f"steps must be a multiple of the number of blocks for Staircase(block={self.block}) "
                f"on length {length} ({n} blocks); got steps={steps}"
            )

    def _block_of(self, length: int) -> Tensor:
        return torch.arange(length, dtype=torch.float64).div(self.block).floor()

    def _tau_clock(self, p: Tensor, length: int) -> Tensor:
        return (self._block_of(length)[None, :] + 1.0 - p[:, None]).clamp(0.0, 1.0)

    def _dtau_dclock(self, p: Tensor, length: int) -> Tensor:
        b = self._block_of(length)[None, :]
        moving = (p[:, None] >= b) & (p[:, None] < b + 1.0)
        return torch.where(moving, -1.0, 0.0).to(torch.float64)

    def __repr__(self) -> str:
        return f"Staircase(block={self.block})"


class Rolling(Path):
    """A ramp of width ``window`` tokens slides left to right (THEORY section 4).

        t_i(s) = clip((i + W - s (L + W)) / W, 0, 1),   i = 0..L-1.

    ``W -> 0`` tends to the AR staircase, ``W -> inf`` to synchronous. The clock is
    ``p = s (L + W)``; token i moves for p in [i, i + W]. Every token is clean from
    ``p = L - 1 + W`` on, so grids end there and spend no step on the idle tail.
    Derivation: proofs/p02_path_invariance.md.
    """

    def __init__(self, window: float = 4.0):
        self.window = as_float(window, "window", low=0.0, low_open=True)  # positive and finite

    def clock(self, length: int) -> float:
        return length + self.window

    def clock_end(self, length: int) -> float:
        return length - 1 + self.window  # the last token lands here; (L - 1 + W, L + W] is idle

    def knot_clocks(self, length: int) -> list[float]:
        P = self.clock(length)
        ks = {float(i) for i in range(length)} | {i + self.window for i in range(length)}
        return sorted(k for k in ks if 0.0 < k < P)

    def _tau_clock(self, p: Tensor, length: int) -> Tensor:
        i = torch.arange(length, dtype=torch.float64)[None, :]
        return ((i + self.window - p[:, None]) / self.window).clamp(0.0, 1.0)

    def _dtau_dclock(self, p: Tensor, length: int) -> Tensor:
        i = torch.arange(length, dtype=torch.float64)[None, :]
        moving = (p[:, None] >= i) & (p[:, None] < i + self.window)
        return torch.where(moving, -1.0 / self.window, 0.0).to(torch.float64)

    def __repr__(self) -> str:
        return f"Rolling(window={self.window:g})"


def validate_grid(grid: Tensor, name: str = "grid") -> Tensor:
    """Check a time grid ``(K+1, L)`` or ``(K+1, B, L)`` and return it in float64.

    Rules (THEORY section 4): at least two rows; finite entries in [0, 1]; every column
    non-increasing; last row all zeros; first row 1 except for prompt columns, which are 0
    throughout. Each failure is a ``ValueError`` naming ``name``.
    """
    if not isinstance(grid, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(grid).__name__}")
    if not grid.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {grid.dtype}")
    if grid.ndim not in (2, 3) or grid.shape[0] < 2 or grid.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (K+1, L) or (K+1, B, L) with K >= 1; got {tuple(grid.shape)}")
    g = grid.to(torch.float64)
    if not bool(((g >= 0) & (g <= 1)).all()):
        raise ValueError(f"{name} entries must be finite and lie in [0, 1]")
    if bool((g[1:] > g[:-1]).any()):
        raise ValueError(f"{name} must be non-increasing along its first (step) axis")
    if bool((g[-1] != 0).any()):
        raise ValueError(f"{name} must end at 0 (its last row must be all zeros)")
    prompt = (g == 0).all(dim=0)
    if bool(((g[0] != 1) & ~prompt).any()):
        raise ValueError(f"{name} must start at 1 (first row), except prompt columns that stay at 0 throughout")
    return g


def to_times(tau: Tensor, t_min: float) -> Tensor:
    """Map path time to process time, ``t = t_min + (1 - t_min) tau`` (THEORY section 5).

    Exact at the ends: 1 stays 1 (the noise end, where the prior applies) and 0 becomes ``t_min``.
    """
    return torch.where(tau == 1.0, torch.ones_like(tau), t_min + (1.0 - t_min) * tau)


def refine(grid: Tensor, m: int) -> Tensor:
    """Split every step of a grid ``(K+1, ...)`` into ``m`` equal sub-steps: ``(K m + 1, ...)``.

    The refined grid runs along the same piecewise-linear path and contains every row of the
    original one (nested refinement, claim C5; convergence studies, C2/C11).
    """
    m = as_int(m, "m", minimum=1)
    frac = (torch.arange(m, dtype=grid.dtype) / m).reshape((-1,) + (1,) * (grid.ndim - 1))
    rows = [grid[k] + frac * (grid[k + 1] - grid[k]) for k in range(grid.shape[0] - 1)]
    return torch.cat([*rows, grid[-1:]])


def grid_times(grid: Tensor, t_min: float) -> Tensor:
    """Process times of a grid ``(K+1, ..., L)``: :func:`to_times` on every column that moves, while
    prompt columns (0 throughout) stay at exactly 0, the clean conditioning tokens of THEORY section 1."""
    prompt = (grid == 0).all(dim=0)
    return torch.where(prompt, torch.zeros_like(grid), to_times(grid, t_min))


def log_snr_spacing(grid: Tensor, schedule, t_min: float = 0.0, log_snr_min: float = -12.0) -> Tensor:
    """Re-space a grid so that every token's logSNR moves in equal steps (THEORY section 4).

    Each value ``tau`` of the grid (path time, later mapped to ``t = t_min + (1 - t_min) tau``) is
    sent through the monotone map that makes ``logSNR(t)`` linear in ``tau`` between
    ``logSNR(t_min)`` at 0 and ``max(logSNR(1), log_snr_min)`` at 1; 0 and 1 stay fixed. On a
    uniform synchronous grid this gives steps uniform in logSNR; on a staircase, uniform within
    each block's stretch. The result is again a valid grid of a (re-timed) path.
    """
    g = validate_grid(grid)
    lam_hi = schedule.log_snr(torch.tensor(t_min, dtype=torch.float64))
    lam_lo = schedule.log_snr(torch.tensor(1.0, dtype=torch.float64)).clamp_min(log_snr_min)
    if not bool(torch.isfinite(lam_hi)) or not float(lam_lo) < float(lam_hi):
        raise ValueError(f"t_min must give a finite logSNR above log_snr_min for {schedule!r}; got t_min={t_min}")
    t = schedule.t_of_log_snr(lam_hi + g * (lam_lo - lam_hi))
    warped = ((t - t_min) / (1.0 - t_min)).clamp(0.0, 1.0)
    return torch.where((g == 0) | (g == 1), g, warped)


def as_grid(path: Path | Sequence[Path] | Tensor, length: int, steps: int | None, batch: int) -> Tensor:
    """Resolve a path argument into a validated grid of shape ``(K+1, B, L)`` in float64 (THEORY section 4, C2).

    ``path`` may be a :class:`Path` (shared by the batch), a sequence of ``batch`` paths (one
    per sequence, gridded with the same ``steps``), or an explicit grid tensor ``(K+1, L)`` or
    ``(K+1, B, L)`` (then ``steps`` must be None or equal K).
    """
    length, batch = _check_length(length), as_int(batch, "batch", minimum=0)
    steps = None if steps is None else _check_steps(steps)
    if isinstance(path, Tensor):
        g = validate_grid(path, "path")
        if steps is not None and steps != g.shape[0] - 1:
            raise ValueError(f"steps={steps} disagrees with the grid passed as path ({g.shape[0] - 1} steps)")
        if g.shape[-1] != length:
            raise ValueError(f"path grid has {g.shape[-1]} columns but the sequence length is {length}")
        if g.ndim == 3 and g.shape[1] != batch:
            raise ValueError(f"path grid has batch {g.shape[1]} but z has batch {batch}")
        return g if g.ndim == 3 else g[:, None, :].expand(-1, batch, -1)
    if steps is None:
        raise ValueError("steps is required when path is a Path object")
    if isinstance(path, Path):
        return path.grid(length, steps)[:, None, :].expand(-1, batch, -1)
    if isinstance(path, Sequence) and all(isinstance(p, Path) for p in path):
        if len(path) != batch:
            raise ValueError(f"path holds {len(path)} paths but z has batch {batch}")
        return torch.stack([p.grid(length, steps) for p in path], dim=1)
    raise TypeError(f"path must be a Path, a sequence of Paths or a grid tensor, got {type(path).__name__}")
