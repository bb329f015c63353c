"""A training run's report: ``loss.png`` (loss and validation curves) and ``report.md`` (THEORY section 8, C9, C13).

Every number in the report is read from the run's own files (``metrics.jsonl``, ``config.json``) or passed in
(the final validation summary); the sentences say what the figures are (exact or a bound) and compare them
with a unigram model of the same training text, so that a reader can tell learning from noise.
"""

from __future__ import annotations

import json
import math
import pathlib

import torch

__all__ = ["plot_curves", "read_metrics", "unigram_bits", "write_run_report"]


def read_metrics(run: pathlib.Path) -> list[dict]:
    """The rows of ``run/metrics.jsonl`` (one per training step; validation fields on evaluated steps) (C9)."""
    path = pathlib.Path(run) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def unigram_bits(train: torch.Tensor, valid: torch.Tensor, vocab: int) -> float:
    """Bits per token of the validation rows under the training text's unigram distribution, add-one smoothed:
    the floor a model must beat to have learned anything beyond token frequencies (C13's scale)."""
    counts = torch.bincount(train.flatten(), minlength=vocab).to(torch.float64) + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[valid.flatten()].mean() / math.log(2.0))


def plot_curves(runs: dict[str, list[dict]], out: pathlib.Path) -> None:
    """Training bound and validation bits per token against steps, one line per run (C9, C13)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in runs.items():
        steps = [r["step"] for r in rows]
        ax1.plot(steps, [r["bound_bits"] for r in rows], lw=0.8, label=name)
        ev = [r for r in rows if "val_ar_bits" in r]
        ax2.plot([r["step"] for r in ev], [r["val_ar_bits"] for r in ev], "o-", label=f"{name}: AR path (exact)")
        ax2.plot([r["step"] for r in ev], [r["val_sync_bits"] for r in ev], "s--", label=f"{name}: synchronous (bound)")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training estimate of the bound (bits/token)")
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation bits/token")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_run_report(run: pathlib.Path, cfg, summary: dict) -> pathlib.Path:
    """Write ``report.md`` and ``loss.png`` for one run; return the report's path (C9, C13)."""
    run = pathlib.Path(run)
    rows = read_metrics(run)
    plot_curves({run.name: rows}, run / "loss.png")
    speed = sorted(r["tokens_per_s"] for r in rows[1:]) or [math.nan]
    source = json.loads((run / "data.json").read_text()) if (run / "data.json").exists() else {}
    corpus = ", ".join(f"{k} {source[k]}" for k in ("name", "sha256", "python_version", "characters") if k in source)
    text = [
        f"# Training run `{run.name}`",
        "",
        f"Model `{cfg.size}` (overrides {cfg.model or 'none'}), data `{cfg.data}`, {cfg.steps} steps of "
        f"{cfg.batch} x {cfg.seq} tokens, path mixture `{cfg.mixture}` ({cfg.surrogate} integrand, t_min "
        f"{cfg.t_min:g}), seed {cfg.seed}.",
        "",
        f"Corpus: {corpus or 'unrecorded'} (all of it in `data.json`).",
        "",
        f"Validation at step {summary['step']} over {summary['val_tokens']} tokens:",
        "",
        f"- AR path (exact log-likelihood of AR decoding with the token sampler, C13): "
        f"**{summary['val_ar_bits']:.4f} bits/token**",
        f"- synchronous path, {cfg.sync_steps} steps (an upper bound on that decoder's NLL): "
        f"{summary['val_sync_bits']:.4f} +- {summary['val_sync_stderr']:.4f} bits/token",
        "",
        f"Median training throughput: {speed[len(speed) // 2]:.0f} tokens/s.",
        "",
        "![loss curves](loss.png)",
    ]
    path = run / "report.md"
    path.write_text("\n".join(text) + "\n")
    return path
