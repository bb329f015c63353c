"""evoflow: autoregressive and diffusion generation as two discretizations of one probability flow.

Every token carries its own progression time ``t_i`` in [0, 1] (0 clean, 1 noise). A denoiser
maps ``(z, tau)`` to per-token logits; :mod:`evoflow.process` turns them into the shared vector
field of claim C1; paths through the time cube (AR staircase, diffusion diagonal, rolling
windows) are integrated by pluggable solvers (C2); the unified ELBO (C3-C10) and the exact
likelihood (C11) are checked against exact oracles. See THEORY.md in the design folder and
``proofs/``. This package never imports :mod:`evoflow.nn`.
"""

from evoflow import solvers
from evoflow.likelihood import flow_log_likelihood, log_likelihood
from evoflow.oracles import MarkovOracle, TableOracle
from evoflow.paths import (
    IndependentTimes,
    MixtureTimes,
    Path,
    PathTimes,
    PrefixTimes,
    Rolling,
    Staircase,
    Synchronous,
    TimeSampler,
    validate_grid,
)
from evoflow.process import DenoiserOutput
from evoflow.schedules import Cosine, Linear, LogLinear, Schedule, get_schedule
from evoflow.solve import SolveResult, solve

__all__ = [
    "Cosine",
    "DenoiserOutput",
    "IndependentTimes",
    "Linear",
    "LogLinear",
    "MarkovOracle",
    "MixtureTimes",
    "Path",
    "PathTimes",
    "PrefixTimes",
    "Rolling",
    "Schedule",
    "SolveResult",
    "Staircase",
    "Synchronous",
    "TableOracle",
    "TimeSampler",
    "flow_log_likelihood",
    "get_schedule",
    "log_likelihood",
    "solve",
    "solvers",
    "validate_grid",
]

__version__ = "0.1.0"
