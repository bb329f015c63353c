"""The training objective: an unbiased estimate of a path-mixture NELBO (claim C9), every path vectorised.

A path's continuous NELBO splits into the motion of its groups of tokens (THEORY sections 4-5):

    NELBO_path(x) = prior + sum_i recon_i + sum_groups int_{t_min}^1 sum_{i in group} 1/2 (-SNR'(t)) D_i dt,

with ``D_i = ||e_{x_i} - ehat_i||^2`` evaluated in the group's state (tokens before the group clean at
t = 0, the group at t, the rest at t = 1) and ``recon_i`` the final jump of token i from ``t_min`` to
0, scored with the closed-form Gaussian decoder ``p(v | z) ~ N(z; alpha e_v, sigma^2 I)`` (a decoder
like any other, so the sum stays a bound, and it needs no network call). The prior term is 0 when
``alpha(1) = 0``. Each group's integral is estimated at one time ``t = G(u)``, ``u ~ U[0, 1)``,
drawn from :class:`GroupTime` (uniform in logSNR, with a uniform tail near t = 1), with weight
``1/2 (-SNR'(t)) / r(t)``. So one model call scores every group at once:

- :class:`Synchronous`: one group, one stream.
- :class:`Staircase` (block b): the blocks are the groups, each at its own time; two streams
  (:meth:`evoflow.nn.EvoTransformer.two_stream`, BD3-LM's layout generalised).
- :class:`Rolling` (window W): a systematic sample of the clock, ``p = u + k W``: the ramps at those
  clock values are disjoint and tile the sequence, so every token is scored, with its own time.
- :class:`Offsets` (M): every token with an independent offset in [0, M] along a unit-speed ramp;
  at a random clock its tokens are clean, moving or pure noise independently: independent
  per-token times, reweighted (by ``1 + M``) as C9 requires to be a path average; one stream.
- :class:`ARJump`: the AR staircase with one jump per token, whose (mixture-kernel) NELBO is the
  exact ``-log p_theta^AR(x)`` of claim C13.

A mixture (:class:`PathMixture`) gives each sequence of a batch one component, by stratified
assignment in proportion to the components' *shares*, and weighs each row by its component's weight
over its share: the mean is an unbiased estimate of the mixture ``sum_j weight_j NELBO_j``, a bound
(C9), whatever the shares (they set how much of the batch each component's estimate gets). ``surrogate="ce"``
replaces ``D_i`` by ``Dmax^2 (-log p_theta(x_i))`` (claim C10: a looser bound, cross-entropy
gradients). The time head's regression loss is added with weight ``time_weight`` (not in the bound).
Derivation: proofs/p09_path_mixtures.md, proofs/p10_ce_surrogate.md, proofs/p07_ar_limit.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.arguments import as_float, as_int
from evoflow.elbo import embedding_diameter, prior_kl
from evoflow.process import posterior_mean
from evoflow.schedules import Schedule

__all__ = ["ARJump", "GroupTime", "Layout", "Loss", "Offsets", "PathMixture", "Rolling", "Staircase",
           "Synchronous", "TrainingPath", "parse_mixture"]


class GroupTime:
    """Times ``t = G(u)`` on ``[t_min, 1]`` for ``u`` in [0, 1) with density ``r`` (claim C9's importance sampling).

    A fraction ``1 - tail`` of ``u`` maps uniformly in logSNR from ``logSNR(t_min)`` down to ``log_snr_low``;
    the rest uniformly in t from there to 1. ``G`` is increasing, ``G(0) = t_min``, ``G(1) = 1``. The weight
    of a draw is ``1/2 (-SNR'(t)) / r(t)`` (uniform-in-logSNR part: ``1/2 SNR(t) span / (1 - tail)``).
    """

    def __init__(self, schedule: Schedule, t_min: float, log_snr_low: float = -10.0, tail: float = 0.05):
        self.schedule = schedule
        self.t_min = as_float(t_min, "t_min", low=0.0, high=1.0, low_open=True, high_open=True)
        self.tail = as_float(tail, "tail", low=0.0, high=1.0, low_open=True, high_open=True)
        hi = float(schedule.log_snr(torch.tensor(self.t_min, dtype=torch.float64)))
        if not math.isfinite(hi) or not hi > log_snr_low:
            raise ValueError(f"t_min={t_min} must give a finite logSNR above log_snr_low={log_snr_low} "
                             f"for {schedule!r}")
        self.hi = hi
        self.lo = max(float(log_snr_low), float(schedule.log_snr(torch.tensor(1.0, dtype=torch.float64))))
        self.t_low = float(schedule.t_of_log_snr(torch.tensor(self.lo, dtype=torch.float64)))

    def __call__(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Times (same shape as ``u``) and their weights ``1/2 (-SNR'(t)) / r(t)``, float64."""
        u = u.to(torch.float64)
        span, head = self.hi - self.lo, 1.0 - self.tail
        in_head = u < head
        lam = self.hi - (u / head).clamp(max=1.0) * span
        t_head = self.schedule.t_of_log_snr(lam).clamp(self.t_min, 1.0)
        t_tail = self.t_low + ((u - head) / self.tail).clamp(min=0.0) * (1.0 - self.t_low)
        t = torch.where(in_head, t_head, t_tail)
        snr_rate = -self.schedule.dsnr(t)  # >= 0
        w_head = 0.5 * self.schedule.snr(t) * span / head
        w_tail = 0.5 * snr_rate * (1.0 - self.t_low) / self.tail
        return t, torch.where(in_head, w_head, w_tail)


@dataclass
class Layout:
    """One draw of training states for a batch (C9): noised times ``tau`` (B, L) (0 = clean, 1 = pure noise),
    integrand weights ``weight`` (B, L) (0 for tokens that are not moving), group starts ``start`` (B, L)
    (None: one stream, the states are ``tau`` itself), and ``jump`` (B, L): tokens scored by their exact AR
    jump ``-log p(x_i | prefix)`` instead of the integrand."""

    tau: Tensor
    weight: Tensor
    start: Tensor | None = None
    jump: Tensor | None = None


class TrainingPath:
    """A path family the objective can score in one vectorised call (THEORY section 4, C9)."""

    def layout(self, batch: int, length: int, times: GroupTime, generator: torch.Generator | None) -> Layout:
        """Training states and weights for ``batch`` sequences of ``length`` tokens."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _rand(shape, generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64)


class Synchronous(TrainingPath):
    """Diffusion: every token at one time per sequence; one stream (THEORY section 4, C9)."""

    def layout(self, batch, length, times, generator):
        t, w = times(_rand((batch, 1), generator))
        return Layout(tau=t.expand(batch, length).clone(), weight=w.expand(batch, length).clone())


class Staircase(TrainingPath):
    """Blocks of ``block`` tokens left to right, each scored at its own time with a clean prefix (C9)."""

    def __init__(self, block: int = 1):
        self.block = as_int(block, "block", minimum=1)

    def layout(self, batch, length, times, generator):
        blocks = -(-length // self.block)
        t, w = times(_rand((batch, blocks), generator))
        index = torch.arange(length) // self.block
        start = (index * self.block).expand(batch, length)
        return Layout(tau=t[:, index], weight=w[:, index], start=start.clone())

    def __repr__(self) -> str:
        return f"Staircase(block={self.block})"


class Rolling(TrainingPath):
    """A ramp of ``window`` tokens, scored at the clock values ``u + k W``: disjoint ramps that tile the sequence
    (a systematic sample of the path's clock, unbiased for its integral), each with its clean prefix (C9).
    Within a ramp the times are ``G`` of the token's place in it, so the ramp is uniform in logSNR."""

    def __init__(self, window: int = 4):
        self.window = as_int(window, "window", minimum=1)

    def layout(self, batch, length, times, generator):
        W = self.window
        u = _rand((batch, 1), generator) * W  # clock offset in [0, W)
        i = torch.arange(length, dtype=torch.float64)[None, :]
        k = torch.floor((i + W - u) / W)  # the ramp whose clock value p_k = u + k W has token i moving
        place = (i + W - (u + k * W)) / W  # in (0, 1]: the token's path time in that ramp
        t, w = times(place.clamp(max=1.0 - 1e-12))
        start = torch.clamp(torch.ceil(u + (k - 1) * W), min=0).long()  # tokens <= u + (k-1) W are clean
        return Layout(tau=t, weight=w, start=torch.minimum(start, torch.arange(length)[None, :]).expand(batch, -1))

    def __repr__(self) -> str:
        return f"Rolling(window={self.window})"


class Offsets(TrainingPath):
    """Independent per-token times as a path ensemble (C9): token i moves during clock ``[o_i, o_i + 1]``,
    ``o_i ~ U[0, M]``; at a clock ``p ~ U[0, 1 + M]`` each token is clean, moving or pure noise. The ensemble's
    NELBO is ``(1 + M)`` times the expected integrand of the moving tokens: one stream, any mix of times."""

    def __init__(self, spread: float = 1.0):
        self.spread = as_float(spread, "spread", low=0.0, low_open=True)

    def layout(self, batch, length, times, generator):
        M = self.spread
        p = _rand((batch, 1), generator) * (1 + M)
        place = 1.0 + _rand((batch, length), generator) * M - p  # path time; moving inside (0, 1)
        t, w = times(place.clamp(0.0, 1.0 - 1e-12))
        moving = (place > 0) & (place < 1)
        tau = torch.where(place <= 0, 0.0, torch.where(place >= 1, 1.0, t))
        return Layout(tau=tau, weight=torch.where(moving, (1 + M) * w, 0.0))

    def __repr__(self) -> str:
        return f"Offsets(spread={self.spread:g})"


class ARJump(TrainingPath):
    """The AR staircase, one jump per token: its NELBO is the exact ``-log p_theta^AR(x)`` (C13, C7)."""

    def layout(self, batch, length, times, generator):
        ones = torch.ones(batch, length, dtype=torch.float64)
        return Layout(tau=ones, weight=torch.zeros_like(ones), start=torch.arange(length).expand(batch, length).clone(),
                      jump=torch.ones(batch, length, dtype=torch.bool))


_PATHS = {"ar": lambda a: ARJump(), "sync": lambda a: Synchronous(), "stair": lambda a: Staircase(int(a or 1)),
          "rolling": lambda a: Rolling(int(a or 4)), "offsets": lambda a: Offsets(float(a or 1.0))}


def parse_mixture(text: str) -> list[tuple[TrainingPath, float, float]]:
    """``"ar:0.8/0.5,stair=4:0.1/0.25,sync:0.1/0.25"`` -> (path, weight, share) per component, from
    ``name[=argument][:weight[/share]]`` with names ar, sync, stair (block), rolling (window), offsets (spread).

    ``weight`` is the component's weight in the bound (C9: any average of path NELBOs is a bound), ``share``
    its share of every batch (default: its weight); both are normalised to sum to 1 over the components.
    """
    parts = []
    for item in (p.strip() for p in str(text).split(",")):
        head, _, numbers = item.partition(":")
        name, _, arg = head.partition("=")
        weight, _, share = numbers.partition("/")
        if name not in _PATHS:
            raise ValueError(f"mixture: unknown path {name!r} in {text!r}; known: {', '.join(_PATHS)}")
        try:
            path, w = _PATHS[name](arg), float(weight) if weight else 1.0
            sh = float(share) if share else w
        except ValueError as e:
            raise ValueError(f"mixture: bad component {item!r} ({e})") from None
        if not (w >= 0 and sh >= 0) or (w > 0) != (sh > 0):
            raise ValueError(f"mixture: weight and share must be >= 0 and both zero or both positive, got {item!r}")
        parts.append((path, w, sh))
    if not parts or not sum(w for _, w, _ in parts) > 0:
        raise ValueError(f"mixture: needs at least one component with a positive weight, got {text!r}")
    return parts


@dataclass
class Loss:
    """One estimate (C9): ``loss`` (scalar, to minimise: mixture bound per token + time-head term), ``bound`` (B,)
    nats per sequence of each row's own component, ``mixture`` (B,) the rows' terms of the mixture's estimate (its
    mean is an unbiased estimate of the mixture NELBO), ``tokens`` per sequence, ``time_loss`` (the time head's
    squared error summed over moving tokens, per token of the batch), and the component of every row."""

    loss: Tensor
    bound: Tensor
    mixture: Tensor
    tokens: int
    time_loss: Tensor
    component: Tensor


class PathMixture:
    """The path-mixture objective (C9): components ``[(path, weight), ...]`` or a :func:`parse_mixture` text.

    ``surrogate``: "mse" (the bound itself) or "ce" (C10's cross-entropy bound); ``time_weight`` scales the
    time head's regression loss; ``t_min`` is where the flow hands over to the Gaussian decoder.
    """

    def __init__(self, components: str | Sequence[tuple[TrainingPath, float, float]], t_min: float = 0.2,
                 surrogate: str = "mse", time_weight: float = 0.1, log_snr_low: float = -10.0):
        self.components = parse_mixture(components) if isinstance(components, str) else list(components)
        if surrogate not in ("mse", "ce"):
            raise ValueError(f"surrogate must be 'mse' or 'ce', got {surrogate!r}")
        self.surrogate, self.t_min, self.log_snr_low = surrogate, float(t_min), float(log_snr_low)
        self.time_weight = as_float(time_weight, "time_weight", low=0.0)
        w = torch.tensor([c[1] for c in self.components], dtype=torch.float64)
        sh = torch.tensor([c[2] for c in self.components], dtype=torch.float64)
        self.weights, self.shares = w / w.sum(), sh / sh.sum()
        self.factors = torch.where(self.shares > 0, self.weights / self.shares.clamp_min(1e-300), 0.0)

    def assign(self, batch: int, generator: torch.Generator | None) -> Tensor:
        """A component per row (B,): stratified, so each gets its share of the batch, in random order."""
        counts = torch.floor(self.shares * batch).long()
        rest = batch - int(counts.sum())
        if rest:
            counts += torch.bincount(torch.multinomial(self.shares, rest, generator=generator), minlength=len(counts))
        rows = torch.repeat_interleave(torch.arange(len(counts)), counts)
        return rows[torch.randperm(batch, generator=generator)]

    def __call__(self, model, x: Tensor, generator: torch.Generator | None = None, rank: int = 0,
                 world: int = 1) -> Loss:
        """The estimate for token ids ``x`` (B, L) under ``model`` (an EvoTransformer), C9.

        With ``world`` processes, ``x`` holds rows ``rank::world`` of a global batch of ``B world`` rows: every
        process draws the randomness of the whole global batch from ``generator`` (so the estimate does not
        depend on how the batch is split) and scores its own rows; ``loss`` is then this process's share,
        scaled so that the mean over processes of its gradient is the global batch's.
        """
        B, L = x.shape
        Bg = B * world
        sch, E = model.schedule, model.embeddings
        draws = self._draws(Bg, L, E.shape[1], sch, generator)
        mine = torch.arange(rank, Bg, world)
        bound = torch.zeros(B, dtype=torch.float64, device=x.device)
        time_err, time_n = x.new_zeros((), dtype=torch.float64), 0
        for j, lay in draws["layouts"].items():
            rows = (draws["which"] == j).nonzero().flatten()  # global rows of component j, in layout order
            keep = rows % world == rank  # may select no row here: every process still makes the call, so
            local = (rows[keep] // world).to(x.device)  # that the processes' model calls (collectives) match
            lay = Layout(*(None if v is None else v[keep] for v in (lay.tau, lay.weight, lay.start, lay.jump)))
            terms, err, n = self._score(model, x[local], lay, draws["noise"][mine][local.cpu()],
                                        draws["decoder"][mine][local.cpu()], E, sch)
            bound = bound.index_add(0, local, terms)
            time_err, time_n = time_err + err, time_n + n
        bound = bound + prior_kl(x, E, sch)
        factor = self.factors.to(bound)[draws["which"][mine].to(x.device)]  # weight / share: the mixture's estimate
        time_loss = time_err / (Bg * L) * world  # per token of the global batch, so that shards add up
        loss = (factor * bound).sum() / (Bg * L) * world + self.time_weight * time_loss
        return Loss(loss=loss, bound=bound.detach(), mixture=(factor * bound).detach(), tokens=L,
                    time_loss=time_loss.detach(), component=draws["which"][mine])

    def _draws(self, batch: int, length: int, dim: int, schedule: Schedule, generator) -> dict:
        """Every random choice of one estimate for a global batch, in a fixed order, on the CPU (C9)."""
        which = self.assign(batch, generator)
        times = GroupTime(schedule, self.t_min, self.log_snr_low)
        layouts = {j: path.layout(int((which == j).sum()), length, times, generator)
                   for j, (path, _, _) in enumerate(self.components) if bool((which == j).any())}
        noise = torch.randn(batch, length, dim, generator=generator)
        decoder = torch.randn(batch, length, dim, generator=generator)
        return {"which": which, "layouts": layouts, "noise": noise, "decoder": decoder}

    def _score(self, model, x: Tensor, lay: Layout, noise: Tensor, decoder: Tensor, E: Tensor, sch: Schedule
               ) -> tuple[Tensor, Tensor, int]:
        """Per-sequence bound terms (b,) of one component's rows, and the time head's squared error and count."""
        dev = x.device
        tau, weight = lay.tau.to(dev), lay.weight.to(dev)
        e = E[x]
        z = (sch.alpha(tau)[..., None].to(e.dtype) * e).addcmul_(sch.sigma(tau)[..., None].to(e.dtype),
                                                                  noise.to(device=dev, dtype=e.dtype))
        out = model(z, tau) if lay.start is None else model.two_stream(x, z, tau, lay.start.to(dev))
        if lay.jump is not None:
            return (_nll(out.logits, x) * lay.jump.to(dev)).sum(-1), x.new_zeros((), dtype=torch.float64), 0
        if self.surrogate == "ce":
            D = embedding_diameter(E.detach()) ** 2 * _nll(out.logits, x)
        else:
            D = ((e.to(torch.float64) - posterior_mean(out.logits, E).to(torch.float64)) ** 2).sum(-1)
        moving = weight > 0
        err = x.new_zeros((), dtype=torch.float64) if out.time is None else \
            (((out.time.to(torch.float64) - tau) ** 2) * moving).sum()
        recon = gaussian_decoder_nll(x, E, sch, self.t_min, decoder.to(dev))
        return (weight * D).sum(-1) + recon, err, int(moving.sum())


def _nll(logits: Tensor, x: Tensor) -> Tensor:
    """``-log softmax(logits)[x]`` (b, L) in float64, the softmax in at least float32 (over V)."""
    at_least_32 = torch.promote_types(logits.dtype, torch.float32)  # float32 over V (float64 models: 64)
    logp = torch.log_softmax(logits.to(at_least_32), -1)
    return -logp.gather(-1, x[..., None]).squeeze(-1).to(torch.float64)


def token_decoder_nll(x: Tensor, z: Tensor, E: Tensor, alpha: Tensor, sigma2: Tensor) -> Tensor:
    """``-log p(x_i | z_i)`` (b, L) under ``p(v | z_i) ~ N(z_i; alpha_i e_v, sigma2_i I)`` with a uniform prior over
    tokens, computed through ``z @ E^T`` (memory b L V), in the dtype of ``z``; 0 where ``sigma2 = 0`` (there the
    latent identifies the token). ``alpha``, ``sigma2`` broadcast against (b, L) (THEORY section 5, C9)."""
    E = E.detach().to(z.dtype)
    alpha, sigma2 = (torch.as_tensor(v, dtype=z.dtype, device=z.device)[..., None] for v in (alpha, sigma2))
    d2 = alpha**2 * (E**2).sum(-1) - 2 * alpha * (z @ E.T)  # (b, L, V): ||z - alpha e_v||^2 up to ||z||^2
    gap = (d2 - d2.gather(-1, x[..., None])) / (2 * sigma2.clamp_min(torch.finfo(z.dtype).tiny))
    return torch.where(sigma2[..., 0] > 0, torch.logsumexp(-gap, -1), 0.0)


def gaussian_decoder_nll(x: Tensor, E: Tensor, schedule: Schedule, t_min: float, noise: Tensor) -> Tensor:
    """``sum_i -log p(x_i | z_i)`` (b,) for ``z ~ q(z | x, t_min)`` under the closed-form decoder
    :func:`token_decoder_nll`: the last jump of every token, from ``t_min`` to 0, scored without the network
    (C9; THEORY section 5's reconstruction term). It is part of the bound but trains nothing (no gradient):
    in float32, as ``-logsumexp`` of the log-density gaps to the true token."""
    with torch.no_grad():
        t = torch.tensor(t_min, dtype=torch.float64)
        a, s2 = float(schedule.alpha(t)), float(schedule.sigma(t) ** 2)
        Ef = E.detach().float()
        z = a * Ef[x] + s2**0.5 * noise.float()  # z ~ q(z | x, t_min), from the given standard noise
        return token_decoder_nll(x, z, Ef, a, s2).to(torch.float64).sum(-1)
