"""e01: one ELBO for AR and diffusion: every claim of ``evoflow verify`` and NELBO_K -> -log p(x) on four paths.

    .venv/bin/python -m experiments.e01_unified_elbo.run [--quick] [--out DIR]

Part 1 runs ``evoflow.verify.run_all`` (claims C1-C13 of docs/theory.md on a fresh Markov oracle, default
settings) and writes its report with :func:`evoflow.verify_report.report` into ``verify/``. Part 2 scores
every sequence of a second exact oracle (V = 3, L = 4, all 81 sequences, weighted by p(x)) with
``evoflow.nelbo`` along the AR staircase, a block staircase, a rolling window and the synchronous diagonal,
for K = base * 2^j steps, with the Gaussian kernel (C3, C4, C6: -> -log p(x) as K grows) and the mixture
kernel (C7: exact along AR at every K; C8: the total correlation at K = 1 synchronous, shrinking with K).
The quantity is the data-averaged gap ``E_x NELBO_K(x) - E_x[-log p(x)]`` (>= 0: an ELBO averaged over the
data is at least the entropy), with its standard error over the trajectories. ``--quick`` skips the slow verify
checks (C2/C11, C4, C6, C9, C12 and the spacing observation) and uses fewer K and trajectories.
Writes ``results.json``, ``nelbo_k.png``, ``verify/`` and ``README.md``.
"""

from __future__ import annotations

import itertools
import pathlib
import time

import torch

import evoflow as ef
from evoflow.verify import CHECKS, Settings, run_all
from evoflow.verify_report import report, table, verdict_line
from experiments.common import arguments, md_table, num, pyplot, readme_ending, save_figure, write_json

F64 = torch.float64
HERE = pathlib.Path(__file__).resolve().parent
V, L, D, SEED = 3, 4, 2, 0
KERNELS = {"gaussian": (ef.GaussianKernel(), 0.1), "mixture": (ef.MixtureKernel(), 1e-3)}  # kernel, t_min
PATHS = {"AR": (ef.Staircase(1), L), "block": (ef.Staircase(2), 2), "rolling": (ef.Rolling(2.0), L + 1),
         "synchronous": (ef.Synchronous(), 1)}  # name: (path, the fewest steps with one step between knots)
QUICK_SKIP = ("check_c2_c11", "check_c4", "observe_spacing", "check_c6", "check_c9", "check_c12")  # the slow ones


def verify_part(out: pathlib.Path, quick: bool) -> dict:
    """``run_all`` on default settings (C1-C13) and its report under ``out/verify``; the rows as dicts."""
    checks = [c for c in CHECKS if not (quick and c.__name__ in QUICK_SKIP)]
    settings = Settings()
    rows, series = run_all(settings, checks=checks)
    command = "experiments.e01_unified_elbo.run" + (" --quick" if quick else "")
    report(rows, series, settings, out / "verify", f"python -m {command} (evoflow.verify.run_all, default settings)")
    return {"verdict": verdict_line(rows), "table": table(rows), "skipped": [c.__name__ for c in CHECKS
                                                                              if c not in checks],
            "rows": [vars(r) for r in rows], "observations": series.get("observations", [])}


def oracle_and_data() -> tuple[ef.MarkovOracle, torch.Tensor, torch.Tensor]:
    """The oracle of part 2, every sequence (V^L, L) and its exact log p(x)."""
    oracle = ef.MarkovOracle.random(V, L, D, ef.get_schedule("cosine"), torch.Generator().manual_seed(SEED))
    xs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    return oracle, xs, oracle.log_prob(xs)


def total_correlation(oracle: ef.MarkovOracle, logp: torch.Tensor) -> float:
    """``TC = sum_i H(x_i) - H(x)`` from the chain's own marginals and the enumerated law (C8's K = 1 gap)."""
    m = oracle.token_marginals(L)
    return float(-(m * m.log()).sum() + (logp.exp() * logp).sum())


def sweep(oracle, xs, logp, kernel, t_min: float, path, steps: list[int], samples: int, seed: int) -> dict:
    """The data-averaged gap ``E_x NELBO_K + E_x log p(x)``, its SE and ``max_x |NELBO_K(x) + log p(x)|`` per K."""
    w, g = logp.exp(), torch.Generator().manual_seed(seed)
    rec = {"steps": steps, "gap": [], "se": [], "max_abs": [], "nfe": []}
    for K in steps:
        r = ef.nelbo(oracle, xs, path, K, kernel=kernel, t_min=t_min, samples=samples, generator=g)
        rec["gap"].append(float((w * (r.total + logp)).sum()))
        rec["se"].append(float((w**2 * r.stderr.nan_to_num() ** 2).sum().sqrt()))
        rec["max_abs"].append(float((r.total + logp).abs().max()))
        rec["nfe"].append(r.nfe)
    return rec


def nelbo_part(quick: bool) -> dict:
    """Part 2 (C3-C8): every kernel on every path, K = base * 2^j."""
    oracle, xs, logp = oracle_and_data()
    doublings, samples = (3, 8) if quick else (6, 64)
    out = {"oracle": f"MarkovOracle.random(vocab={V}, length={L}, dim={D}, cosine, seed {SEED})",
           "sequences": len(xs), "samples": samples, "entropy": float(-(logp.exp() * logp).sum()),
           "total_correlation": total_correlation(oracle, logp), "kernels": {}}
    for k, (name, (kernel, t_min)) in enumerate(KERNELS.items()):
        paths = {}
        for j, (pname, (path, base)) in enumerate(PATHS.items()):
            steps = [base * 2**i for i in range(doublings + 1)]
            paths[pname] = {"path": repr(path), **sweep(oracle, xs, logp, kernel, t_min, path, steps, samples,
                                                        seed=100 * k + j)}
        out["kernels"][name] = {"t_min": t_min, "paths": paths}
    return out


def plot(part: dict, path: pathlib.Path) -> str:
    """NELBO_K - (-log p(x)), data-averaged, against K: one panel per kernel, one line per path (+-2 SE)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (kname, kern) in zip(axes, part["kernels"].items(), strict=True):
        for pname, rec in kern["paths"].items():
            ax.errorbar(rec["steps"], rec["gap"], yerr=[2 * s for s in rec["se"]], marker="o", ms=3, capsize=2,
                        label=f"{pname}: {rec['path']}")
        ax.axhline(0.0, color="k", lw=0.8, label="-log p(x) (exact)")
        if kname == "mixture":
            ax.axhline(part["total_correlation"], color="gray", ls="--", lw=0.8, label="total correlation TC")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_ylim(-0.3, 3 * max(max(r["gap"]) for r in kern["paths"].values()))
        ax.set_xlabel("steps K")
        ax.set_ylabel("E_x NELBO_K(x) - E_x[-log p(x)]  (nats)")
        ax.set_title(f"{kname} kernel, t_min = {kern['t_min']:g}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"NELBO_K -> -log p(x) on an exact oracle ({part['oracle']}; all {part['sequences']} sequences)",
                 fontsize=9)
    return save_figure(fig, path)


def nelbo_rows(part: dict) -> list[list]:
    """The README's table of part 2: per kernel and path, the gap at the fewest and the most steps."""
    rows = []
    for kname, kern in part["kernels"].items():
        for pname, r in kern["paths"].items():
            rows.append([kname, f"{pname} ({r['path']})", kern["t_min"], r["steps"][0],
                         f"{num(r['gap'][0])} ± {num(r['se'][0], 2)}", r["steps"][-1],
                         f"{num(r['gap'][-1])} ± {num(r['se'][-1], 2)}", num(r["max_abs"][-1])])
    return rows


def reading(part: dict) -> list[str]:
    """Sentences computed from part 2's numbers, each naming its claim."""
    g, m = part["kernels"]["gaussian"]["paths"], part["kernels"]["mixture"]["paths"]
    first, lastv = [r["gap"][0] for r in g.values()], [r["gap"][-1] for r in g.values()]
    z_last = max(abs(r["gap"][-1]) / max(r["se"][-1], 1e-300) for r in g.values())
    ar, sync = m["AR"], m["synchronous"]
    lows = min(min(gi / max(si, 1e-300) for gi, si in zip(r["gap"], r["se"], strict=True)) for r in g.values())
    return [
        f"- Gaussian kernel (C3, C4, C6): on the four paths the data-averaged gap falls from {num(min(first))} to "
        f"{num(max(first))} nats at the fewest steps to {num(min(lastv))} to {num(max(lastv))} nats at the most "
        f"({2 ** (len(g['AR']['steps']) - 1)} times the steps), at most {num(z_last, 2)} standard errors from 0; "
        f"its lowest value anywhere is {num(lows, 2)} SE ("
        + ("never 3 SE below 0, as a bound on average must be). " if lows > -3 else "MORE than 3 SE below 0: a bound "
           "on average should not be). ")
        +
        "Every path heads for the same -log p(x): the AR and the diffusion ELBO are one bound on four grids.",
        f"- Mixture kernel along AR (C7): max_x |NELBO_K(x) + log p(x)| is at most {num(max(ar['max_abs']))} at "
        f"every K from {ar['steps'][0]} to {ar['steps'][-1]}: "
        + ("exact for every sequence, with zero variance." if max(ar["max_abs"]) < 1e-8 else "NOT exact."),
        f"- Mixture kernel, synchronous (C8): the gap at K = 1 is {num(sync['gap'][0], 5)} nats against the total "
        f"correlation TC = {num(part['total_correlation'], 5)}; it falls to {num(sync['gap'][-1])} ± "
        f"{num(sync['se'][-1], 2)} at K = {sync['steps'][-1]}. The block staircase's gap at one jump per block "
        f"(K = {m['block']['steps'][0]}, only the tokens of a block drawn independently) is "
        f"{num(m['block']['gap'][0])}, the rolling window's at K = {m['rolling']['steps'][0]} is "
        f"{num(m['rolling']['gap'][0])} ± {num(m['rolling']['se'][0], 2)}.",
    ]


def readme(result: dict) -> str:
    """The study's README.md, every number from ``result``."""
    v, part = result["verify"], result["nelbo"]
    skipped = f" (quick: skipped {', '.join(v['skipped'])})" if v["skipped"] else ""
    headers = ["kernel", "path", "t_min", "K min", "gap at K min ± SE", "K max", "gap at K max ± SE",
               "max_x \\|gap(x)\\| at K max"]
    return "\n".join([
        "# e01: one ELBO for AR and diffusion",
        "",
        "**Question.** Does one discrete-time ELBO (`evoflow.nelbo`) score AR decoding and diffusion alike, "
        "converging to the same exact `-log p(x)` along every path as the steps grow, and does every claim "
        "of docs/theory.md hold on a fresh exact oracle (`evoflow verify`)?",
        "",
        f"**Command.** `.venv/bin/python -m experiments.e01_unified_elbo.run{' --quick' if result['quick'] else ''}` "
        f"({result['seconds']:.0f} s, one CPU thread; `--quick` is the test's size).",
        "",
        f"## Part 1: `evoflow verify` (claims C1-C13){skipped}",
        "",
        "`evoflow.verify.run_all(Settings())` (Markov oracle V = L = 3, d = 2, cosine, seed 0); the full "
        "report with its figures and notes is [verify/report.md](verify/report.md).",
        "",
        v["table"],
        "",
        v["verdict"],
        "",
        "![verify: NELBO gap against K](verify/nelbo_vs_steps.png)",
        "",
        "## Part 2: NELBO_K -> -log p(x) on four paths (C3-C8)",
        "",
        f"Oracle {part['oracle']}; all {part['sequences']} sequences weighted by p(x), {part['samples']} "
        f"trajectories each; entropy H = {num(part['entropy'], 5)} nats, total correlation "
        f"TC = {num(part['total_correlation'], 5)} nats. Gap = `E_x NELBO_K(x) - E_x[-log p(x)]` in nats, "
        "with its standard error over the trajectories; the Gaussian kernel truncates at t_min = 0.1 (it needs "
        "SNR(t_min) < inf), the mixture kernel at 1e-3 (near C8's t_min -> 0 limit); both end with the "
        "oracle's exact joint decoder.",
        "",
        md_table(headers, nelbo_rows(part)),
        "",
        "![NELBO_K against K](nelbo_k.png)",
        "",
        *readme_ending(reading(part)),
    ]) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Run both parts, write ``results.json``, ``nelbo_k.png``, ``verify/`` and ``README.md``; return the result."""
    quick, out = arguments(__doc__, HERE, argv)
    start = time.perf_counter()
    result = {"study": "e01_unified_elbo", "quick": quick, "verify": verify_part(out, quick),
              "nelbo": nelbo_part(quick)}
    result["figure"] = plot(result["nelbo"], out / "nelbo_k.png")
    result["seconds"] = time.perf_counter() - start
    write_json(out / "results.json", result)
    (out / "README.md").write_text(readme(result))
    print(result["verify"]["verdict"])
    print("\n".join(reading(result["nelbo"])))
    print(f"wrote {out} in {result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    main()
