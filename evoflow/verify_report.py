"""The report of ``evoflow verify``: the claims table, the figures and ``report.md`` (THEORY C1-C14).

Every sentence of the report is built from the rows and series of the run: the verdict line counts
the rows, the notes say why a row is ``n/a``, the reading restates each claim with its measured
number and whether it held; observations (measured statements that are no claim) come from the checks.
"""

from __future__ import annotations

import numpy as np
import torch

from evoflow.schedules import get_schedule
from evoflow.verify import ClaimResult, Settings

__all__ = ["plot", "report", "table"]

CLAIM = {  # what each claim states (docs/theory.md), to be followed by whether it held here
    "C1": "the velocity field transports p_tau token by token (multi-time continuity)",
    "C2": "the flow's log-density does not depend on the decoding path",
    "C3": "the Gaussian step KL is 1/2 (SNR_s - SNR_t) |e - ehat|^2",
    "C4": "the Gaussian NELBO_K converges to the continuous NELBO at O(1/K)",
    "C5": "refining a grid does not raise the data-averaged NELBO (exact posterior)",
    "C6": "the continuous NELBO equals -log p(x) on every path (exact posterior, prior and decoder)",
    "C7": "along Staircase(1) the mixture kernel with the exact posterior is the exact reverse kernel",
    "C8": "synchronous steps cost the total correlation at K = 1, a gap that falls with K",
    "C9": "path-mixture estimators are unbiased for the path-averaged continuous NELBO, itself a bound",
    "C10": "the cross-entropy surrogate bounds the squared error",
    "C11": "the flow's log-likelihood equals the closed form",
    "C12": "a KV cache of the committed prefix gives the same logits as full recomputation",
    "C13": "AR decoding with the token sampler has an exact likelihood: log p(x) for an oracle, the NELBO with zero "
           "variance for the Transformer",
    "C14": "the Evo controller's limits are AR decoding (window 1, full steps) and synchronous K-step decoding "
           "(window L, steps 1/K), which sample p(x) and, at K = 1, the product of the marginals",
}


def table(rows: list[ClaimResult]) -> str:
    """The verification rows (claims C1-C14) as a markdown table."""
    out = ["| claim | quantity | measured | expected | verdict |", "|---|---|---|---|---|"]
    esc = lambda text: text.replace("|", "\\|")  # noqa: E731
    out += [f"| {r.claim} | {esc(r.quantity)} | {r.measured:.3g} | {esc(r.expected)} | {r.verdict} |" for r in rows]
    return "\n".join(out)


def verdict_line(rows: list[ClaimResult]) -> str:
    """One sentence counting the rows that held, failed and could not run (C1-C14)."""
    failed = [r for r in rows if r.verdict == "FAIL"]
    na = [r for r in rows if r.verdict == "n/a"]
    checked = len(rows) - len(na)
    skipped = f"; {len(na)} row(s) n/a (see the notes)" if na else ""
    if not failed:
        return f"Verdict: all {checked} checked rows hold{skipped}."
    claims = ", ".join(dict.fromkeys(r.claim for r in failed))
    return f"Verdict: {len(failed)} of {checked} checked rows FAILED ({claims}){skipped}."


def reading(rows: list[ClaimResult]) -> list[str]:
    """Per claim: its statement, whether it held here, and the measured numbers behind that (C1-C14)."""
    out = []
    for claim in dict.fromkeys(r.claim for r in rows):
        mine = [r for r in rows if r.claim == claim]
        na = sum(r.verdict == "n/a" for r in mine)
        status = ("FAILED" if any(r.verdict == "FAIL" for r in mine) else "could not run" if na == len(mine)
                  else f"holds where it could run ({na} of {len(mine)} rows n/a)" if na else "holds")
        numbers = "; ".join(f"{r.quantity} = {r.measured:.3g} (expected {r.expected}, {r.verdict})" for r in mine)
        out.append(f"- {claim}, {CLAIM.get(claim, 'see docs/theory.md')}: {status}. {numbers}.")
    return out


def plot(series: dict, outdir) -> list[str]:
    """Figures of the report (C4, C6, C8, C9): NELBO gap against K per path and kernel, and the
    variance reduction per estimator; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (kind, path), (ks, gaps) in ((k, v) for k, v in series.items() if isinstance(k, tuple)):
        ax.loglog(ks, np.maximum(np.abs(gaps), 1e-6), "o-", label=f"{kind}, {path}")
    ax.set_xlabel("steps K")
    ax.set_ylabel("|NELBO_K - its reference|  (nats)")
    ax.set_title("Gaussian NELBO_K -> NELBO_inf (C4); mixture gap to -log p(x) (C8)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(outdir / "nelbo_vs_steps.png", dpi=110)
    plt.close(fig)
    names = ["nelbo_vs_steps.png"]
    if "variance" in series:
        fig, ax = plt.subplots(figsize=(6, 3))
        items = list(series["variance"].items())
        ax.bar([k for k, _ in items], [v for _, v in items])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_ylabel("variance reduction per call vs uniform")
        ax.set_title("Continuous-time estimators (C9)")
        fig.tight_layout()
        fig.savefig(outdir / "estimator_variance.png", dpi=110)
        plt.close(fig)
        names.append("estimator_variance.png")
    return names


def _prior_sentence(settings: Settings) -> str:
    a1 = float(get_schedule(settings.schedule).alpha(torch.tensor(1.0, dtype=torch.float64)))
    if a1 == 0.0:
        return "alpha(1) = 0, so the prior N(0, sigma(1)^2 I) is exact."
    return (f"alpha(1) = {a1:.3g} > 0, so N(0, sigma(1)^2 I) is only approximate: the NELBO checks use the "
            "oracle's exact log p_1 as prior, and rows whose statement needs alpha(1) = 0 are n/a.")


def report(rows: list[ClaimResult], series: dict, settings: Settings, outdir, command: str) -> str:
    """Write ``report.md`` (claims C1-C14) and its figures under ``outdir``; return the report text."""
    outdir.mkdir(parents=True, exist_ok=True)
    figures = plot(series, outdir)
    notes = [f"- {r.claim} ({r.quantity}): {r.note}" for r in rows if r.note]
    observations = [f"- {o}" for o in series.get("observations", [])]
    text = "\n".join([
        "# evoflow verify: the claims of docs/theory.md on a fresh exact oracle",
        "",
        f"Command: `{command}`. Oracle: Markov chain, V={settings.vocab}, L={settings.length}, d={settings.dim}, "
        f"schedule {settings.schedule}, seed {settings.seed}. The oracle's posteriors, log p_tau(z), joint decoder "
        "and log p(x) are exact, so every quantity below has a known answer. NELBOs are in nats per sequence "
        f"(Gaussian kernel = VDM's x0-parametrised step; mixture kernel = MDLM-style categorical step). "
        + _prior_sentence(settings),
        "",
        table(rows),
        "",
        verdict_line(rows),
        "",
        *(["## Notes", "", *notes, ""] if notes else []),
        *[f"![{n}]({n})" for n in figures],
        "",
        "## Reading",
        "",
        *reading(rows),
        *(["", "## Observations (measured, no claim of docs/theory.md, no verdict)", "", *observations]
          if observations else []),
    ])
    (outdir / "report.md").write_text(text + "\n")
    return text
