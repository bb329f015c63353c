"""Bits per token of a model on held-out text, under a decoding path, each figure labelled exact or bound.

- ``ar``: the AR path with the token sampler, exact (claim C13, :func:`evoflow.ar_log_likelihood`).
- ``sync:K``, ``block:B[:K]``, ``rolling:W[:K]``: the mixture-kernel NELBO along ``Synchronous()``,
  ``Staircase(B)`` or ``Rolling(W)`` with K grid steps (THEORY section 5): the token sampler's decoding
  along that path, whose negative log-likelihood it bounds from above (C8: the price of moving several
  tokens per step), from t = 1 to the ``t_min`` the model was trained to, where the closed-form Gaussian
  decoder of the training objective (:func:`evoflow.train.objective.token_decoder_nll`) decodes.

Bounds are Monte-Carlo estimates over one trajectory per sequence, with a fixed seed (so a figure is
reproduced exactly by ``evoflow eval``) and their standard error over the sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from evoflow.autoregressive import ar_log_likelihood
from evoflow.elbo import nelbo
from evoflow.kernels import MixtureKernel
from evoflow.paths import Path, Rolling, Staircase, Synchronous
from evoflow.train.objective import token_decoder_nll

__all__ = ["GaussianDecoded", "PathScore", "parse_path", "score_path"]

LN2 = math.log(2.0)


@dataclass
class PathScore:
    """Bits per token on a decoding path (C13 exact for ``ar``, a C8-type bound otherwise), its standard error
    over sequences, whether it is exact, the tokens scored and the label (``"ar"``, ``"sync:16"``)."""

    label: str
    bits: float
    stderr: float
    exact: bool
    tokens: int

    def describe(self) -> str:
        """``"ar: 5.123 bits/token (exact)"`` or ``"sync:16: 6.2 +- 0.1 bits/token (bound)"`` (C13, C8)."""
        if self.exact:
            return f"{self.label}: {self.bits:.4f} bits/token (exact)"
        return f"{self.label}: {self.bits:.4f} +- {self.stderr:.4f} bits/token (bound)"


def parse_path(spec: str, length: int, steps: int | None = None) -> tuple[str, Path | None, int]:
    """``"ar"``, ``"sync"``, ``"sync:K"``, ``"block:B"``, ``"block:B:K"``, ``"rolling:W"``, ``"rolling:W:K"``
    -> (label, path or None for ar, grid steps); ``steps`` is the default K (THEORY section 4)."""
    name, *args = str(spec).split(":")
    try:
        nums = [int(a) for a in args]
    except ValueError:
        raise ValueError(f"path: bad number in {spec!r}") from None
    if name == "ar" and not nums:
        return "ar", None, length
    if name == "sync" and len(nums) <= 1:
        K = nums[0] if nums else (steps or 16)
        return f"sync:{K}", Synchronous(), K
    if name in ("block", "rolling") and len(nums) in (1, 2) and nums[0] >= 1:
        path = Staircase(nums[0]) if name == "block" else Rolling(float(nums[0]))
        base = path.n_blocks(length) if name == "block" else length + nums[0] - 1
        K = nums[1] if len(nums) == 2 else base * max(1, (steps or base) // base)
        return f"{name}:{nums[0]}:{K}", path, K
    raise ValueError(f"path must be ar, sync[:K], block:B[:K] or rolling:W[:K], got {spec!r}")


class GaussianDecoded:
    """The model with the closed-form decoder ``p(x_i = v | z_i) ~ N(z_i; alpha e_v, sigma^2 I)`` (uniform prior over
    tokens, independently per token) as its joint decoder at the clean end of a bound: the decoder the training
    objective scores the final jump with (C9), valid like any other; tokens at sigma = 0 are identified."""

    def __init__(self, model):
        self.model, self.schedule, self.embeddings = model, model.schedule, model.embeddings

    def __call__(self, z, tau):
        return self.model(z, tau)

    def log_posterior(self, x: Tensor, z: Tensor, tau: Tensor) -> Tensor:
        sch = self.schedule
        return -token_decoder_nll(x, z.to(torch.float64), self.embeddings, sch.alpha(tau), sch.sigma(tau) ** 2).sum(-1)


@torch.no_grad()
def score_path(model, x: Tensor, spec: str, steps: int | None = None, seed: int = 0, batch: int = 16,
               t_min: float = 0.0) -> PathScore:
    """Bits per token of token ids ``x`` (N, L) under ``model`` along the path ``spec`` (C13 / C8), in batches.

    Bounds run the path from t = 1 down to ``t_min`` (pass the ``t_min`` the model was trained to: below it it
    has never been asked anything) and decode there with the closed-form Gaussian decoder of the training
    objective (at ``t_min = 0`` the latent identifies the token and the term is 0)."""
    label, path, K = parse_path(spec, x.shape[1], steps)
    per_seq = []
    g = torch.Generator(device=x.device).manual_seed(seed)
    for chunk in x.split(batch):
        if path is None:
            per_seq.append(-ar_log_likelihood(model, chunk))
        else:
            r = nelbo(GaussianDecoded(model), chunk, path, K, kernel=MixtureKernel(), t_min=t_min, generator=g)
            per_seq.append(r.total)
    nats = torch.cat(per_seq).to(torch.float64).cpu() / x.shape[1]
    se = float(nats.std() / math.sqrt(len(nats))) if len(nats) > 1 else math.nan
    return PathScore(label, float(nats.mean()) / LN2, se / LN2, exact=path is None, tokens=x.numel())
