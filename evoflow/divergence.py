"""Divergence estimators for the exact likelihood: ``D_i = div_{z_i} u_i`` per token (claim C11).

An estimator is called with ``fn: (z, tau) -> (u, ehat)`` and returns ``(u, ehat, D)``. Both keep
the autograd graph when asked (``create_graph``), so that the log-likelihood through the flow is
differentiable with respect to the latents and to the denoiser's parameters; otherwise they
return detached tensors and free their graph at once.

- :class:`ExactDivergence`: the trace of every token's Jacobian block by autograd, one basis vector
  per replicated copy of the batch, in chunks sized to a memory budget from the cost of the first copy;
  refused up front (a ``ValueError`` naming ``divergence``) when even one copy does not fit.
- :class:`Hutchinson`: ``D_i ~ sum_k v_ik (v^T J)_ik`` with a Rademacher probe ``v`` that is held for
  one solve (so the ODE stays deterministic) and drawn afresh at the start of the next.

Derivation: proofs/p11_exact_likelihood.md.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Divergence", "ExactDivergence", "Hutchinson", "get_divergence", "memory_budget"]

VelocityFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (z (N, L, d), tau (N, L)) -> (u, ehat)
_DEFAULT_CAP = 1 << 30  # at most 1 GiB per chunk by default: larger chunks buy no speed


def memory_budget(device: torch.device) -> int:
    """Bytes an exact-divergence chunk may hold: a quarter of the free memory, at most 1 GiB (C11)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            info = pathlib.Path("/proc/meminfo").read_text().split("\n")
            free = next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemAvailable"))
        except (OSError, StopIteration, ValueError):
            free = 4 * _DEFAULT_CAP
    return int(min(_DEFAULT_CAP, free // 4))


def _second_order(create_graph: bool):
    """A context in which a graph kept for a second derivative can be built: the fused attention
    kernels (flash, memory-efficient) have no double backward, so attention takes the math kernel."""
    if not create_graph:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _inputs(z: Tensor, create_graph: bool) -> Tensor:
    """``z`` itself when the caller differentiates through it, else a fresh leaf to differentiate by."""
    return z if create_graph and z.requires_grad else z.detach().requires_grad_(True)


class Divergence:
    """Estimator of the per-token divergence ``D_i = sum_k d u_{ik} / d z_{ik}`` (claim C11)."""

    def begin(self, generator: torch.Generator | None = None) -> None:
        """Called at the start of every solve; stochastic estimators draw their probe afresh here."""

    def __call__(self, fn: VelocityFn, z: Tensor, tau: Tensor, create_graph: bool = False
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(u, ehat, D)``: (B, L, d), (B, L, d), (B, L); with the graph kept if ``create_graph``."""
        raise NotImplementedError


_TRANSIENTS = 3  # on CPU: peak of a forward + backward over the bytes saved for backward (measured: 2.5x)


def _copy_cost(run: Callable[[], tuple], device: torch.device) -> tuple[tuple, int]:
    """Run ``run`` (one copy of the batch, forward and backward) and return its result and its memory.

    On CUDA the allocator's peak is exact. On the CPU there is no allocator record, so the cost is
    the bytes autograd saves for the backward pass (each storage once) times ``_TRANSIENTS``, for
    the forward's temporaries and the backward's gradients.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = run()
        return out, torch.cuda.max_memory_allocated(device) - before
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return out, _TRANSIENTS * sum(seen.values())


class ExactDivergence(Divergence):
    """Exact divergence by autograd, in chunks of replicated copies of the batch (claim C11).

    Copy ``n`` of the batch is probed with basis vector ``e_n`` of the ``L d`` coordinates; since copies
    do not interact, ``grad(sum_n <u^(n), e_n>, z^(n))`` holds row n of the Jacobian, whose n-th entry
    is a diagonal element. The first copy alone measures what one copy costs (the allocator's peak on
    CUDA; on the CPU the bytes autograd saves, scaled for temporaries), once per solve; the basis vectors
    then go in chunks that fit ``max_bytes`` (default :func:`memory_budget`). When one copy exceeds the
    budget, or, with the graph kept for a gradient, all ``L d`` copies together do, the call is refused
    before any further work.
    """

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                      or max_bytes < 1):
            raise ValueError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.chunks = 0  # chunks used by the last call (a diagnostic)
        self._cost: dict[tuple, int] = {}  # bytes per copy, measured once per solve and input kind
        self._budget: int | None = None

    def begin(self, generator: torch.Generator | None = None) -> None:
        self._cost, self._budget = {}, None

    def _chunk(self, fn, z, tau, basis: Tensor, create_graph: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Diagonal entries (B, L, d) for the basis vectors ``basis`` (c,), and u, ehat of the first copy."""
        c, (B, L, d) = basis.shape[0], z.shape
        probe = torch.zeros(c, L * d, dtype=z.dtype, device=z.device)
        probe[torch.arange(c), basis] = 1.0
        probe = probe.reshape(c, 1, L, d).expand(c, B, L, d).reshape(c * B, L, d)
        with torch.enable_grad(), _second_order(create_graph):
            rep = _inputs(z, create_graph)[None].expand(c, B, L, d).reshape(c * B, L, d)
            ur, ehat = fn(rep, tau[None].expand(c, B, L).reshape(c * B, L))
            (g,) = torch.autograd.grad((ur * probe).sum(), rep, create_graph=create_graph)
        return (g * probe).reshape(c, B, L, d).sum(0), ur[:B], ehat[:B]

    def __call__(self, fn, z, tau, create_graph=False):
        B, L, d = z.shape
        n = L * d
        if self._budget is None:
            self._budget = self.max_bytes if self.max_bytes is not None else memory_budget(z.device)
        budget = self._budget
        order = torch.arange(n, device=z.device)
        key = (tuple(z.shape), z.dtype, z.device, create_graph)
        done, diag = 0, torch.zeros_like(z)
        if key not in self._cost:  # the first copy alone measures what one copy costs
            (diag, u, ehat), cost = _copy_cost(lambda: self._chunk(fn, z, tau, order[:1], create_graph), z.device)
            self._cost[key] = cost + 4 * z.numel() * z.element_size()  # + the copy, its probe, u and gradient
            done = 1
        per_copy = self._cost[key]
        need = per_copy * (n if create_graph else 1)
        if need > budget:
            raise ValueError(
                f"divergence='exact' needs {need / 2**20:.0f} MiB for this batch (B={B}, L={L}, d={d}: "
                f"{n} basis vectors{', all kept for the gradient' if create_graph else ''}) but the budget is "
                f"{budget / 2**20:.0f} MiB; use divergence='hutchinson' (unbiased, one probe per solve), "
                "a smaller batch, or ExactDivergence(max_bytes=...)")
        size = max(1, budget // per_copy)
        self.chunks = done
        for start in range(done, n, size):
            part, u_c, e_c = self._chunk(fn, z, tau, order[start:start + size], create_graph)
            diag, self.chunks = diag + part, self.chunks + 1
            if start == 0:
                u, ehat = u_c, e_c
        D = diag.sum(-1)
        return (u, ehat, D) if create_graph else (u.detach(), ehat.detach(), D.detach())


class Hutchinson(Divergence):
    """Hutchinson's estimator ``D_i ~ sum_k v_ik (v^T J)_ik`` with a Rademacher probe ``v`` (claim C11).

    Unbiased per token. The probe is drawn at the first call of a solve, from the generator given to
    :meth:`begin` (the solve's), else the one given here, else torch's global one, and held for the
    rest of that solve so the ODE stays deterministic; every solve draws a new one, so averaging the
    log-likelihoods of repeated solves converges to the exact-divergence value.
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator
        self._draw_from: torch.Generator | None = generator
        self._probe: Tensor | None = None

    def begin(self, generator: torch.Generator | None = None) -> None:
        self._probe = None
        self._draw_from = generator if generator is not None else self.generator

    def __call__(self, fn, z, tau, create_graph=False):
        if self._probe is None or self._probe.shape != z.shape:
            bits = torch.randint(0, 2, z.shape, generator=self._draw_from)
            self._probe = (2.0 * bits - 1.0).to(dtype=z.dtype, device=z.device)
        v = self._probe
        with torch.enable_grad(), _second_order(create_graph):
            zz = _inputs(z, create_graph)
            u, ehat = fn(zz, tau)
            (g,) = torch.autograd.grad((u * v).sum(), zz, create_graph=create_graph)
        D = (g * v).sum(-1)
        return (u, ehat, D) if create_graph else (u.detach(), ehat.detach(), D.detach())


def get_divergence(divergence: str | Divergence, generator: torch.Generator | None = None) -> Divergence:
    """Resolve ``"exact"``, ``"hutchinson"`` or a :class:`Divergence` object (C11)."""
    if isinstance(divergence, Divergence):
        return divergence
    table = {"exact": ExactDivergence, "hutchinson": lambda: Hutchinson(generator)}
    if divergence not in table:
        raise ValueError(f"divergence must be one of {sorted(table)} or a Divergence object, got {divergence!r}")
    return table[divergence]()
