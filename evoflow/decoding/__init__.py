"""Decoding: tokens from the flow (THEORY sections 4-5, C14).

- :mod:`~evoflow.decoding.sampler`: the token sampler (temperature, top-p, argmax; float64), the mixture
  kernel's reverse step :class:`TokenStep` and the commit wrapper :class:`Committing`;
- :mod:`~evoflow.decoding.controllers`: fixed paths as controllers and Evo's adaptive :class:`EvoController`;
- :mod:`~evoflow.decoding.generate`: :func:`generate` and its :class:`GenerateResult` with cost accounting.
"""

from evoflow.decoding.controllers import EvoController, path_controller
from evoflow.decoding.generate import GenerateResult, generate
from evoflow.decoding.sampler import Committing, TokenSampler, TokenStep

__all__ = ["Committing", "EvoController", "GenerateResult", "TokenSampler", "TokenStep",
           "generate", "path_controller"]
