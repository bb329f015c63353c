"""evoflow: autoregressive and diffusion generation as two discretizations of one probability flow.

Every token carries its own progression time ``t_i`` in [0, 1] (0 clean, 1 noise). A denoiser
maps ``(z, tau)`` to per-token logits; :mod:`evoflow.process` turns them into the shared vector
field of claim C1; paths through the time cube (AR staircase, diffusion diagonal, rolling
windows) are integrated by pluggable solvers (C2); the unified ELBO (C3-C10) and the exact
likelihood (C11) are checked against exact oracles. See docs/theory.md (the specification),
docs/architecture.md (the layout) and ``proofs/``. This package never imports :mod:`evoflow.nn`.
"""

from evoflow import solvers
from evoflow.autoregressive import ar_conditionals, ar_log_likelihood
from evoflow.decoding import EvoController, GenerateResult, TokenSampler, generate
from evoflow.elbo import ContinuousNELBO, NELBOResult, continuous_nelbo, nelbo
from evoflow.estimators import Antithetic, LogSNRImportance, PathDistribution, Stratified, Uniform
from evoflow.kernels import GaussianKernel, MixtureKernel
from evoflow.likelihood import flow_log_likelihood, log_likelihood
from evoflow.oracles import MarkovOracle, TableOracle
from evoflow.paths import Path, Rolling, Staircase, Synchronous, validate_grid
from evoflow.process import DenoiserOutput
from evoflow.schedules import Cosine, Linear, LogLinear, Schedule, get_schedule
from evoflow.solve import SolveResult, solve
from evoflow.time_samplers import IndependentTimes, MixtureTimes, PathTimes, PrefixTimes, TimeSampler

__all__ = [
    "Antithetic",
    "ContinuousNELBO",
    "Cosine",
    "DenoiserOutput",
    "EvoController",
    "GaussianKernel",
    "GenerateResult",
    "IndependentTimes",
    "Linear",
    "LogLinear",
    "LogSNRImportance",
    "MarkovOracle",
    "MixtureKernel",
    "MixtureTimes",
    "NELBOResult",
    "Path",
    "PathDistribution",
    "PathTimes",
    "PrefixTimes",
    "Rolling",
    "Schedule",
    "SolveResult",
    "Staircase",
    "Stratified",
    "Synchronous",
    "TableOracle",
    "TimeSampler",
    "TokenSampler",
    "Uniform",
    "ar_conditionals",
    "ar_log_likelihood",
    "continuous_nelbo",
    "flow_log_likelihood",
    "generate",
    "get_schedule",
    "log_likelihood",
    "nelbo",
    "solve",
    "solvers",
    "validate_grid",
]

__version__ = "0.1.0"
