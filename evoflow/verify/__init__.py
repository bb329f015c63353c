"""``evoflow verify``: every claim of docs/theory.md checked numerically on fresh exact oracles.

C1-C11 and C14 (the controller limits) run on a random Markov oracle; C12 (the frontier cache) on a
tiny Transformer with live time conditioning, and C13 (the exact AR likelihood) on both, so this
package belongs to the application layer, beside the CLI. Each check returns :class:`ClaimResult`
rows (claim, quantity, measured, expected, verdict, note) computed from the numbers; :func:`run_all`
collects them with the series behind the report's figures.

The denoiser under test is the oracle unless ``transform`` (oracle -> denoiser) says otherwise, so a
denoiser that is wrong in a known way (a tempered posterior, a wrong schedule derivative) makes the
claims that depend on it fail. Where ``alpha(1) > 0`` the oracle's own ``log p_1`` serves as the exact
prior; a row whose statement needs ``alpha(1) = 0`` says so (``n/a`` with the schedule's alpha(1)).
Modules: :mod:`~evoflow.verify.context` (settings, oracle, verdicts), :mod:`~evoflow.verify.flow`
(C1-C3, C10-C12), :mod:`~evoflow.verify.bounds` (C4-C6, C9), :mod:`~evoflow.verify.mixture` (C7, C8, C13),
:mod:`~evoflow.verify.decoding` (C14), :mod:`~evoflow.verify.estimates` (common-noise sums and the continuous
limit).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from evoflow.verify.bounds import check_c4, check_c5, check_c6, check_c9, observe_spacing
from evoflow.verify.context import ClaimResult, Context, Settings, make_context
from evoflow.verify.decoding import check_c14
from evoflow.verify.flow import check_c1, check_c2_c11, check_c3, check_c10, check_c12
from evoflow.verify.mixture import check_c7, check_c8, check_c13

__all__ = ["ClaimResult", "Context", "Settings", "make_context", "run_all"]

CHECKS = (check_c1, check_c2_c11, check_c3, check_c4, observe_spacing, check_c5, check_c6, check_c7, check_c8,
          check_c9, check_c10, check_c12, check_c13, check_c14)
"""Every check, in the order :func:`run_all` runs them (claims C1-C14)."""


def run_all(settings: Settings, transform: Callable | None = None, checks: Sequence[Callable] | None = None,
            progress: bool = False) -> tuple[list[ClaimResult], dict]:
    """Run the checks (all of :data:`CHECKS` by default) on a fresh oracle; return the rows sorted by claim
    and the series for the figures, with ``series["observations"]``: measured sentences that are no claim (C1-C14).

    ``transform(oracle)`` is the denoiser under test (the oracle itself by default); ``progress`` shows a
    tqdm bar on stderr.
    """
    from tqdm import tqdm

    ctx = make_context(settings, transform)
    rows: list[ClaimResult] = []
    todo = CHECKS if checks is None else tuple(checks)
    for check in tqdm(todo, desc="verify", unit="check", file=sys.stderr, disable=not progress, leave=False):
        out = check(ctx)
        rows.extend(out if isinstance(out, list) else [out])
    ctx.series["observations"] = ctx.observations
    return sorted(rows, key=lambda r: int(r.claim[1:])), ctx.series
