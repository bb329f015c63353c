"""``evoflow.generate``: token sequences from any denoiser along any controller, with honest cost accounting.

Every token starts at ``t = 1`` (pure noise ``z ~ N(0, sigma(1)^2 I)``), prompt tokens at ``t = 0`` with
``z = e_x``; the controller proposes per-token times after each network call, the solver moves the
latents, and tokens reaching ``t = 0`` commit through the token sampler (:mod:`evoflow.decoding.sampler`).
The one solve loop of :func:`evoflow.solve.integrate` runs it (THEORY section 4, C14).

Cost: ``nfe`` counts the network calls made for the batch; ``calls_per_sequence`` only those in which a
sequence still had a token to decode (a fast sequence is not charged for a slow one in a lock-step
batch); per-token figures exclude the prompt (NVlabs/Fast-dLLM#15 counted prompts in throughput).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.arguments import as_int
from evoflow.decoding.controllers import EvoController, path_controller
from evoflow.decoding.sampler import Committing, TokenSampler, TokenStep
from evoflow.field import Field
from evoflow.paths import Path
from evoflow.process import DenoiserOutput, check_denoiser
from evoflow.solve import Controller, integrate
from evoflow.solvers.base import Solver, State, get

__all__ = ["GenerateResult", "generate"]


@dataclass
class GenerateResult:
    """Outcome of :func:`generate` (C14): ``tokens`` (B, L) (prompt included), ``times`` (steps + 1, B, L) the
    per-token time history (one row per solver step: per call for a one-call solver), ``nfe`` the network
    calls for the batch, ``calls_per_sequence`` (B,), ``prompt_length``, ``cache_hits`` (token positions
    served from a KV cache), ``wall_time`` in seconds."""

    tokens: Tensor
    times: Tensor
    nfe: int
    calls_per_sequence: Tensor
    prompt_length: int
    cache_hits: int
    wall_time: float

    @property
    def generated(self) -> int:
        """Tokens generated per sequence (the prompt excluded)."""
        return self.tokens.shape[1] - self.prompt_length

    @property
    def calls_per_token(self) -> float:
        """Network calls per generated token, each sequence charged only its own calls."""
        return float(self.calls_per_sequence.sum()) / max(self.tokens.shape[0] * self.generated, 1)

    @property
    def tokens_per_call(self) -> float:
        """Generated tokens committed per network call (the inverse of :attr:`calls_per_token`)."""
        return float(self.tokens.shape[0] * self.generated) / max(float(self.calls_per_sequence.sum()), 1.0)

    def cost(self) -> str:
        """One line: calls, calls per token, tokens per call, cache hits, wall time, tokens/s (prompt excluded)."""
        n = self.tokens.shape[0] * self.generated
        return (f"{self.nfe} calls for {self.tokens.shape[0]} x {self.generated} tokens: {self.calls_per_token:.3f} "
                f"calls/token, {self.tokens_per_call:.2f} tokens/call, {self.cache_hits} cache hits, "
                f"{self.wall_time:.3f} s, {n / max(self.wall_time, 1e-12):.1f} tokens/s")


class _CountingField(Field):
    """A :class:`Field` that also counts, per sequence, the calls in which it still had a token above t = 0."""

    def __init__(self, denoiser):
        super().__init__(denoiser)
        self.row_calls: Tensor | None = None

    def __call__(self, z: Tensor, tau: Tensor):
        before = self.nfe
        ev = super().__call__(z, tau)
        if self.nfe != before:
            open_ = (tau > 0).any(-1).long()
            self.row_calls = open_ if self.row_calls is None else self.row_calls + open_
        return ev


class _Truncated:
    """The denoiser called on the first ``n`` positions only, for a denoiser whose outputs do not depend on a
    suffix of pure-noise tokens (``hides_noise``: the Transformer under ``Frontier``, C13); positions from ``n``
    on, which the step neither reads nor moves, get uniform logits and time 1. With ``ahead`` (set when the
    last of the ``n`` positions is pure noise in every row) a denoiser that ``reads_ahead`` (a shifted model:
    the output of a pure-noise token reads the state before it, C13) is called on ``n - 1`` positions and
    returns the n-th output as well, so that AR decoding computes only the token it has just committed. Through
    a KV cache (a denoiser with ``chunk``) only the positions after the cached prefix are computed and copied;
    the prefix, committed, gets uniform logits like the suffix."""

    def __init__(self, denoiser):
        self.denoiser, self.schedule, self.embeddings = denoiser, denoiser.schedule, denoiser.embeddings
        self.reads_ahead = bool(getattr(denoiser, "reads_ahead", False))
        self.n: int | None = None
        self.ahead = False

    @property
    def hits(self) -> int:
        """The wrapped denoiser's cache hits (0 without a cache)."""
        return getattr(self.denoiser, "hits", 0)

    @staticmethod
    def _placed(offset: int, out: DenoiserOutput, length: int) -> DenoiserOutput:
        """Outputs of positions ``offset ..`` placed in full-length ones: uniform logits, time 1 and ehat 0 elsewhere
        (the pure-noise suffix, and the cached committed prefix: no step reads or moves either)."""

        def place(v: Tensor | None, fill: float) -> Tensor | None:
            if v is None:
                return None
            full = v.new_full((v.shape[0], length, *v.shape[2:]), fill)
            full[:, offset : offset + v.shape[1]] = v
            return full

        return DenoiserOutput(logits=place(out.logits, 0.0), time=place(out.time, 1.0), ehat=place(out.ehat, 0.0))

    def __call__(self, z: Tensor, tau: Tensor) -> DenoiserOutput:
        L = z.shape[1]
        n = L if self.n is None else min(self.n, L)
        m, extra = (n - 1, {"ahead": 1}) if self.ahead else (n, {})
        chunk = getattr(self.denoiser, "chunk", None)
        if callable(chunk):  # a KV cache: only positions after its committed prefix are computed and copied
            return self._placed(*chunk(z[:, :m], tau[:, :m], **extra), L)
        if n == L and not self.ahead:
            return self.denoiser(z, tau)
        return self._placed(0, self.denoiser(z[:, :m], tau[:, :m], **extra), L)


class _Horizon(Controller):
    """Sets how far ``view`` calls reach: every token read or moved in the step (t < 1, or t_to != t), and, for a
    controller that evaluates inside ``next`` (Evo), its own ``horizon(t)`` for that call."""

    def __init__(self, inner: Controller, view: _Truncated):
        self.inner, self.view = inner, view

    def start(self) -> Tensor:
        return self.inner.start()

    def next(self, t: Tensor, state: State, field: Field) -> Tensor | None:
        ahead = getattr(self.inner, "horizon", None)
        used = self.view.n = t.shape[1] if ahead is None else ahead(t)
        self.view.ahead = False
        t_to = self.inner.next(t, state, field)
        if t_to is not None:
            live = ((t < 1) | (t_to != t)).any(0)  # (L,)
            last = torch.where(live, torch.arange(1, t.shape[1] + 1, device=t.device), 1).max()  # (): the horizon
            noise = (t.index_select(1, (last - 1).view(1)) == 1).all() & (last >= 2)  # the last one is pure noise
            need, noise = (int(v) for v in torch.stack([last, noise.long()]).tolist())  # one host read
            if ahead is not None and need > used:  # the controller's call saw too little: evaluate again
                field.forget()
            self.view.n, self.view.ahead = need, bool(noise) and self.view.reads_ahead
        return t_to


def _prompt(prompt, batch: int, length: int, vocab: int, device) -> Tensor:
    """``prompt`` as ids (batch, P), from (P,), (1, P) or (batch, P) ids; P < length (C14)."""
    if prompt is None:
        return torch.zeros((batch, 0), dtype=torch.long, device=device)
    if isinstance(prompt, Sequence) and not isinstance(prompt, str):
        prompt = torch.tensor(list(prompt))
    if not isinstance(prompt, Tensor) or prompt.is_floating_point() or prompt.is_complex() or \
            prompt.dtype == torch.bool:
        raise TypeError("prompt must be integer token ids (a tensor or a list), of shape (P,), (1, P) or (batch, P)")
    prompt = prompt.to(device=device, dtype=torch.long)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[0] not in (1, batch):
        raise ValueError(f"prompt must have shape (P,), (1, P) or ({batch}, P), got {tuple(prompt.shape)}")
    if prompt.shape[1] >= length:
        raise ValueError(f"prompt has {prompt.shape[1]} tokens but length is {length}: nothing left to generate")
    if prompt.numel() and (int(prompt.min()) < 0 or int(prompt.max()) >= vocab):
        raise ValueError(f"prompt ids must lie in [0, {vocab}), got {int(prompt.min())}..{int(prompt.max())}")
    return prompt.expand(batch, -1)


def _controller(controller, steps, tau0: Tensor):
    if isinstance(controller, Path):
        return path_controller(controller, None if steps is None else as_int(steps, "steps", minimum=1), tau0)
    if isinstance(controller, EvoController) or callable(getattr(controller, "begin", None)):
        if steps is not None:
            raise ValueError("steps: an adaptive controller picks its own steps; pass steps=None")
        return controller.begin(tau0)
    raise TypeError(f"controller must be a Path (Staircase, Synchronous, Rolling) or an EvoController, "
                    f"got {type(controller).__name__}")


@torch.no_grad()
def generate(denoiser, length: int, controller, steps: int | None = None, batch: int = 1,
             solver: Solver | str | None = None, prompt=None, temperature: float = 1.0, top_p: float = 1.0,
             generator: torch.Generator | None = None) -> GenerateResult:
    """Decode ``batch`` sequences of ``length`` tokens (prompt included) along ``controller`` (THEORY section 4, C14).

    ``controller``: any :class:`~evoflow.paths.Path` as a fixed grid of ``steps`` steps over the generated
    positions (``Staircase(1)`` is AR, ``Staircase(b)`` block diffusion, ``Synchronous()`` K-step diffusion,
    ``Rolling(W)``; ``steps`` None: one jump per block or knot, one step per token for synchronous), or an
    :class:`EvoController` (adaptive; ``steps`` must be None). ``solver`` moves tokens between commits:
    None for pure token sampling (the mixture kernel's reverse step), or any solver (``"ddim"``, an ODE
    solver, ``DDIM(eta)``). Commits draw from the tempered, top-p-truncated posterior in float64
    (``temperature=0``: argmax, from the prior's mode ``z = 0`` with noise-free token steps, so that the
    result depends on neither the seed nor the batch). ``prompt``: token ids (P,), (1, P) or (batch, P),
    held at ``t = 0``.
    """
    check_denoiser(denoiser)
    length = as_int(length, "length", minimum=1)
    batch = as_int(batch, "batch", minimum=1)
    sampler = TokenSampler(temperature, top_p)
    inner = TokenStep(sampler) if solver is None else get(solver)
    stepper = Committing(inner, sampler)
    E = denoiser.embeddings
    V, d = E.shape
    ids = _prompt(prompt, batch, length, V, E.device)
    P = ids.shape[1]
    tau0 = torch.ones((batch, length), dtype=torch.float64, device=E.device)
    tau0[:, :P] = 0.0
    ctrl = _controller(controller, steps, tau0)
    start = time.perf_counter()
    sigma1 = float(denoiser.schedule.sigma(torch.tensor(1.0, dtype=torch.float64)))
    if sampler.temperature > 0:
        z = sigma1 * torch.randn((batch, length, d), generator=generator, dtype=E.dtype, device=E.device)
    else:  # argmax decoding starts from the prior's mode, so that it is deterministic and batch-invariant
        z = torch.zeros((batch, length, d), dtype=E.dtype, device=E.device)
    z[:, :P] = E[ids].detach()
    tokens = torch.full((batch, length), -1, dtype=torch.long, device=E.device)
    tokens[:, :P] = ids
    if getattr(denoiser, "hides_noise", False):  # leave the pure-noise suffix out of every call
        denoiser = _Truncated(denoiser)
        ctrl = _Horizon(ctrl, denoiser)
    field = _CountingField(denoiser)
    hits0 = getattr(denoiser, "hits", 0)
    out = integrate(field, stepper, State(z=z, memory=stepper.begin(tokens)), ctrl, generator, record_times=True,
                    restrict=True)  # ehat and u (ODE and DDIM solvers) only where the step moves
    final = out.memory.tokens
    if bool((final < 0).any()):
        raise RuntimeError("generate: the controller stopped before every token was committed")
    row_calls = field.row_calls if field.row_calls is not None else torch.zeros(batch, dtype=torch.long)
    return GenerateResult(tokens=final, times=out.times, nfe=field.nfe, calls_per_sequence=row_calls,
                          prompt_length=P, cache_hits=getattr(denoiser, "hits", 0) - hits0,
                          wall_time=time.perf_counter() - start)
