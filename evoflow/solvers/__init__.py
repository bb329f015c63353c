"""Solvers for the per-token probability-flow ODE (claim C2) and its stochastic family.

Library code passes Solver objects; names are looked up at the edge through the registry,
which third-party packages extend with the ``evoflow.solvers`` entry-point group::

    [project.entry-points."evoflow.solvers"]
    my-solver = "my_package.module:MySolver"

Built-in: euler, midpoint, heun, rk4 (Butcher tableaux), ddim, ddim-ancestral, dpm++2m
(exponential integrators), torchdiffeq:<method> (adapter). See THEORY sections 3-4.
"""

from evoflow.solvers.base import Solver, State, get, names, register
from evoflow.solvers.explicit import RK4, Euler, ExplicitRK, Heun, Midpoint
from evoflow.solvers.exponential import DDIM, DPMSolverPP2M, ddim_mean
from evoflow.solvers.external import TorchDiffEq

__all__ = [
    "DDIM",
    "RK4",
    "DPMSolverPP2M",
    "Euler",
    "ExplicitRK",
    "Heun",
    "Midpoint",
    "Solver",
    "State",
    "TorchDiffEq",
    "ddim_mean",
    "get",
    "names",
    "register",
]
