"""Shared pieces of the CPU benchmarks: a cheap per-token denoiser and a median timer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

import evoflow as ef
from evoflow.process import DenoiserOutput


class LinearDenoiser:
    """A cheap per-token field: logits = z W / sqrt(d) + b t (one matmul, no attention)."""

    def __init__(self, vocab: int, dim: int, schedule: ef.Schedule, seed: int = 0, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(dim, vocab, generator=g, dtype=dtype) / dim**0.5
        self.b = torch.randn(vocab, generator=g, dtype=dtype)
        self.embeddings = torch.randn(vocab, dim, generator=g, dtype=dtype)
        self.schedule = schedule

    def __call__(self, z: torch.Tensor, tau: torch.Tensor) -> DenoiserOutput:
        return DenoiserOutput(logits=z @ self.W + tau.to(z.dtype)[..., None] * self.b)


def median_times(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function; runs interleaved, in an order rotated every repeat, so that
    machine noise and the allocator's state hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}
