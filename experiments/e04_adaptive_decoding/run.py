"""e04: adaptive decoding on an oracle with easy and hard stretches (THEORY section 4, C14).

    .venv/bin/python -m experiments.e04_adaptive_decoding.run [--quick] [--out DIR]

The oracle is a Markov chain over V = 8 tokens built to mix near-deterministic runs with high-entropy
tokens: tokens 0 -> 1 -> ... -> 5 follow each other with probability 1 - eps (the easy stretch), and after
5, 6 or 7 the next token is drawn afresh (0 with probability 0.4, 6 or 7 with 0.3 each: the hard token).
Every controller decodes N sequences of L tokens with the token sampler; quality is measured against the
true law in two ways, each with the floor of N exact samples (``oracle.sample``) beside it:

- ``pair TV``: the total variation between the empirical and the exact distribution of adjacent pairs
  (x_i, x_{i+1}), averaged over i (a distance on the two-token marginals, where this chain's dependence is);
- ``NLL``: the mean true negative log-likelihood of the samples, ``E_q[-log p(x)]`` (exact samples: the
  entropy of p; samples with improbable transitions push it up).

Calls are per sequence (``calls_per_sequence``, a sequence is not charged for the batch's slowest).
Writes ``results.json``, ``calls_quality.png`` and prints the table the README quotes.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import torch

import evoflow as ef

F64 = torch.float64
HERE = pathlib.Path(__file__).resolve().parent


def easy_hard_oracle(length: int, eps: float = 0.005, run: int = 5, dim: int = 4, seed: int = 0) -> ef.MarkovOracle:
    """The chain of this study: an easy run 0 -> 1 -> ... -> ``run`` (probability 1 - eps each), then a hard token."""
    V = 8
    T = torch.zeros(V, V, dtype=F64)
    for i in range(run):
        T[i] = eps / (V - 1)
        T[i, i + 1] = 1 - eps
    T[run:, 0] = 0.4
    T[run:, run + 1:] = 0.6 / (V - run - 1)
    T = (T + 1e-4) / (T + 1e-4).sum(1, keepdim=True)  # every transition possible: no posterior is 0 / 0
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(V, dim, generator=g, dtype=F64)
    E = E / E.norm(dim=1, keepdim=True) * math.sqrt(dim)
    return ef.MarkovOracle(init=T[V - 1].clone(), transition=T, embeddings=E, schedule=ef.get_schedule("cosine"),
                           length=length)


def pair_tv(oracle: ef.MarkovOracle, x: torch.Tensor) -> float:
    """Mean over i of TV(empirical law of (x_i, x_{i+1}), exact law), the exact one by the chain's marginals."""
    V, L = oracle.vocab, x.shape[1]
    marg, tv = oracle.init, 0.0
    for i in range(L - 1):
        exact = marg[:, None] * oracle.transition  # (V, V)
        emp = torch.bincount(x[:, i] * V + x[:, i + 1], minlength=V * V).to(F64) / x.shape[0]
        tv += 0.5 * float((emp - exact.flatten()).abs().sum())
        marg = marg @ oracle.transition
    return tv / (L - 1)


def controllers(L: int, quick: bool = False) -> list[tuple[str, object, int | None]]:
    """(label, controller, steps): AR, synchronous K, block, and a grid of Evo settings (smaller when ``quick``)."""
    rows: list[tuple[str, object, int | None]] = [("ar", ef.Staircase(1), None)]
    rows += [(f"sync:{K}", ef.Synchronous(), K) for K in ((L // 2, L) if quick else (L // 4, L // 2, L, 2 * L))]
    rows += [] if quick else [(f"block:{b}", ef.Staircase(b), L) for b in (2, 4)]
    for kappa in (4, 16) if quick else (2, 4, 8, 16):
        for threshold in (0.9, 0.99):
            evo = ef.EvoController(window=L, min_step=0.0, max_step=1.0, kappa=kappa, commit_threshold=threshold)
            rows.append((f"evo k={kappa} thr={threshold}", evo, None))
    rows.append(("evo (defaults)", ef.EvoController(), None))
    if not quick:
        rows.append(("evo window=4 k=8", ef.EvoController(window=4, min_step=0.0, kappa=8), None))
    return rows


def study(L: int, N: int, seed: int = 0, quick: bool = False) -> dict:
    """Every controller's calls and quality, the exact samples' floor, and the equal-quality call ratios."""
    oracle = easy_hard_oracle(L, seed=seed)
    exact = oracle.sample(N, generator=torch.Generator().manual_seed(seed + 1))
    out = {"L": L, "N": N, "floor": {"pair_tv": pair_tv(oracle, exact), "nll": float(-oracle.log_prob(exact).mean())},
           "rows": []}
    for label, ctrl, steps in controllers(L, quick):
        r = ef.generate(oracle, L, ctrl, steps=steps, batch=N, generator=torch.Generator().manual_seed(seed + 2))
        out["rows"].append({"controller": label, "calls": float(r.calls_per_sequence.double().mean()),
                            "pair_tv": pair_tv(oracle, r.tokens), "nll": float(-oracle.log_prob(r.tokens).mean())})
    out["ratios"] = {m: equal_quality_ratio(out["rows"], L, m) for m in ("pair_tv", "nll")}
    return out


def equal_quality_ratio(rows: list[dict], L: int, metric: str) -> dict:
    """The Evo row with the fewest calls at least as good as synchronous decoding with L calls on ``metric``,
    and its calls over L (the issue's goal: <= 0.5); None when no Evo row matches."""
    target = next(r[metric] for r in rows if r["controller"] == f"sync:{L}")
    good = [r for r in rows if r["controller"].startswith("evo") and r[metric] <= target]
    best = min(good, key=lambda r: r["calls"]) if good else None
    return {"sync_L": target, "evo": None if best is None else best["controller"],
            "ratio": None if best is None else best["calls"] / L}


def plot(result: dict, path: pathlib.Path) -> None:
    """Quality against calls per sequence, one marker family per controller kind, the exact floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, name in zip(axes, ("pair_tv", "nll"), ("adjacent-pair TV to p", "E_q[-log p(x)] (nats)"),
                                strict=True):
        for kind, marker in (("ar", "s"), ("sync", "o"), ("block", "^"), ("evo", "*")):
            rows = [r for r in result["rows"] if r["controller"].startswith(kind)]
            ax.plot([r["calls"] for r in rows], [r[metric] for r in rows], marker, label=kind, ms=8)
        ax.axhline(result["floor"][metric], ls="--", c="gray", label="exact samples (floor)")
        ax.set_xscale("log")
        ax.set_xlabel("network calls per sequence")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"e04: easy/hard Markov oracle, L = {result['L']}, N = {result['N']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict) -> str:
    """The markdown table of the README."""
    lines = ["| controller | calls / sequence | pair TV | E_q[-log p] |", "|---|---|---|---|",
             f"| exact samples (floor) | - | {result['floor']['pair_tv']:.4f} | {result['floor']['nll']:.3f} |"]
    lines += [f"| {r['controller']} | {r['calls']:.2f} | {r['pair_tv']:.4f} | {r['nll']:.3f} |" for r in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="L = 16, N = 400 (the test's size)")
    parser.add_argument("--out", default=None, help="default: this folder; runs/<study>-quick with --quick")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    L, N = (16, 400) if args.quick else (32, 2000)
    result = study(L, N, quick=args.quick)
    out = pathlib.Path(args.out or ("runs/e04_adaptive_decoding-quick" if args.quick else HERE))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "calls_quality.png")
    print(table(result))
    for metric, r in result["ratios"].items():
        ratio = "no Evo row" if r["ratio"] is None else f"{r['ratio']:.2f} x L calls"
        print(f"{metric}: sync:{L} scores {r['sync_L']:.4f}; the fewest-call Evo row at least as good: "
              f"{r['evo']}, {ratio}")
    return result


if __name__ == "__main__":
    main()
