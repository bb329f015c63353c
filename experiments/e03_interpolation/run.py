"""e03: the AR-diffusion interpolation of a trained model, bits/token from AR to synchronous (THEORY C8, C9, C13).

    .venv/bin/python -m experiments.e03_interpolation.run [--runs runs] [--rows 16] [--quick] [--out DIR]

For the Evo and AR-only runs of ``evoflow demo`` (the newest ``runs/demo-*``; trained first if there is
none), the held-out bits/token along ``Staircase(B)`` for B in {1, 4, 16, 64, L} (B = 1 one jump per token is the AR
path, scored here as a bound; B = L is synchronous) and ``Rolling(W)`` for the same W, each with one step
per token (K = L: block B takes B steps per block, rolling one clock unit per step), plus the exact AR
path (C13). Every figure except ``ar`` is an upper bound on the NLL of decoding along that path with the
token sampler (C8); the study asks how the bound moves between the two ends and how much the Evo mixture
buys off the AR path. Writes ``results.json``, ``interpolation.png`` and prints the README's table.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch

HERE = pathlib.Path(__file__).resolve().parent


def study(runs: dict[str, pathlib.Path], rows: int, widths: list[int]) -> dict:
    """Bits/token per run along block B and rolling W (one step per token) and the exact AR path (C8, C13)."""
    from evoflow.train.session import load_run

    out: dict = {"widths": widths, "runs": {}}
    for name, path in runs.items():
        run = load_run(path)
        x = run.rows[:rows]
        L = x.shape[1]
        scores = {"ar": _score(run, x, "ar")}
        for w in widths:
            scores[f"block:{w}"] = _score(run, x, f"block:{w}:{L}")
            scores[f"rolling:{w}"] = _score(run, x, f"rolling:{w}:{L - 1 + w}")
        out["runs"][name] = {"run": str(path), "step": run.step, "tokens": int(x.numel()), "bits": scores}
    return out


def _score(run, x, spec: str) -> float:
    from evoflow.train.evaluate import score_path

    return score_path(run.model, x, spec, t_min=run.config.t_min).bits


def plot(result: dict, path: pathlib.Path) -> None:
    """Bits/token against block size and rolling window (log x), one line per run and path family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    w = result["widths"]
    for name, r in result["runs"].items():
        for family, style in (("block", "o-"), ("rolling", "s--")):
            ax.plot(w, [r["bits"][f"{family}:{v}"] for v in w], style, label=f"{name}: {family} (bound)")
        ax.axhline(r["bits"]["ar"], lw=0.8, ls=":", label=f"{name}: AR path (exact)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("block size B / rolling window W (tokens)")
    ax.set_ylabel("held-out bits per token")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict) -> str:
    """The README's table: one row per width, block and rolling columns per run."""
    names = list(result["runs"])
    head = "| width | " + " | ".join(f"{n} block | {n} rolling" for n in names) + " |"
    lines = [head, "|---|" + "---|---|" * len(names)]
    for w in result["widths"]:
        cells = [f"{result['runs'][n]['bits'][f'block:{w}']:.3f} | {result['runs'][n]['bits'][f'rolling:{w}']:.3f}"
                 for n in names]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines.append("| AR path (exact) | " + " | ".join(f"{result['runs'][n]['bits']['ar']:.3f} | " for n in names) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from experiments.trained import ensure_runs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs", help="where to find (or train) the demo's runs")
    parser.add_argument("--evo", default=None, help="an Evo run directory (instead of the newest demo)")
    parser.add_argument("--ar", default=None, help="the AR-only run to compare (with --evo)")
    parser.add_argument("--rows", type=int, default=16, help="validation rows scored")
    parser.add_argument("--quick", action="store_true", help="widths 1, 4 and L only")
    parser.add_argument("--out", default=None, help="default: this folder; runs/<study>-quick with --quick")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    evo, ar = (pathlib.Path(args.evo), pathlib.Path(args.ar)) if args.evo else ensure_runs(args.runs)
    from evoflow.train.session import load_model

    L = load_model(evo)[1].seq
    widths = [1, 4, L] if args.quick else [w for w in (1, 4, 16, 64) if w < L] + [L]
    result = study({"evo": evo, "ar": ar}, args.rows, widths)
    out = pathlib.Path(args.out or ("runs/e03_interpolation-quick" if args.quick else HERE))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "interpolation.png")
    print(table(result))
    return result


if __name__ == "__main__":
    main()
