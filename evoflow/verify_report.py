"""The report of ``evoflow verify``: the claims table, the figures and ``report.md`` (THEORY C1-C12)."""

from __future__ import annotations

import numpy as np

from evoflow.verify import ClaimResult, Settings

__all__ = ["plot", "report", "table"]


def table(rows: list[ClaimResult]) -> str:
    """The verification rows (claims C1-C12) as a markdown table."""
    out = ["| claim | quantity | measured | expected | verdict |", "|---|---|---|---|---|"]
    esc = lambda text: text.replace("|", "\\|")  # noqa: E731
    out += [f"| {r.claim} | {esc(r.quantity)} | {r.measured:.3g} | {r.expected} | {r.verdict} |" for r in rows]
    return "\n".join(out)


def plot(series: dict, outdir) -> list[str]:
    """Figures of the report (C4, C6, C8, C9): NELBO gap against K per path and kernel, and the
    variance reduction per estimator; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (kernel, path), (ks, gaps) in ((k, v) for k, v in series.items() if isinstance(k, tuple)):
        ax.loglog(ks, np.maximum(np.abs(gaps), 1e-6), "o-", label=f"{kernel}, {path}")
    ax.set_xlabel("steps K")
    ax.set_ylabel("E[NELBO_K] - E[-log p(x)]  (nats)")
    ax.set_title("NELBO_K converges to -log p(x) (C4, C6); mixture gap falls (C8)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
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


def report(rows: list[ClaimResult], series: dict, settings: Settings, outdir, command: str) -> str:
    """Write ``report.md`` (claims C1-C12) and its figures under ``outdir``; return the report text."""
    outdir.mkdir(parents=True, exist_ok=True)
    figures = plot(series, outdir)
    failed = [r for r in rows if r.verdict == "FAIL"]
    text = "\n".join([
        "# evoflow verify: the claims of THEORY.md on a fresh exact oracle",
        "",
        f"Command: `{command}`. Oracle: Markov chain, V={settings.vocab}, L={settings.length}, d={settings.dim}, "
        f"schedule {settings.schedule}, seed {settings.seed}. The oracle's posteriors, log p_tau(z), joint decoder "
        "and log p(x) are exact, so every quantity below has a known answer. NELBOs are in nats per sequence "
        "(Gaussian kernel = VDM's x0-parametrised step; mixture kernel = MDLM-style categorical step).",
        "",
        table(rows),
        "",
        f"Verdict: {'all claims hold' if not failed else f'{len(failed)} check(s) failed'}.",
        "",
        *[f"![{n}]({n})" for n in figures],
        "",
        "Reading: C7 is exact (zero variance) because with one token moving per step the mixture kernel with the "
        "exact posterior is the true reverse kernel; C8 shows the price of moving all tokens at once (the total "
        "correlation at K = 1) and its decay with K; C4/C6 show the Gaussian kernel approaching -log p(x) on "
        "AR, synchronous and rolling paths alike. Grids uniform in logSNR win by an order of magnitude at K = 4 "
        "(a grid uniform in t spends its last step on the whole SNR range near t_min) but, depending on where the "
        "data's MMSE changes, the advantage shrinks or reverses by K ~ 16 (figure). C9 compares continuous-time "
        "estimators at equal network calls; the fitted logSNR proposal is the variance-optimal one for s, while "
        "the noise in z ~ q(z | x, tau) that no choice of s removes bounds what any of them can gain.",
    ])
    (outdir / "report.md").write_text(text + "\n")
    return text
