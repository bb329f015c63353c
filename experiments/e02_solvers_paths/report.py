"""The README of e02, every number and every sentence computed from the run's result (THEORY C2, C11, C14)."""

from __future__ import annotations

import itertools
import math

from experiments.common import md_table, num, readme_ending


def slope(calls: list[float], error: list[float]) -> float:
    """Slope of log error against log calls over the last two points (about -order for a converging solver)."""
    if len(calls) < 2 or min(error[-2:]) <= 0 or calls[-1] == calls[-2]:
        return math.nan
    return math.log(error[-1] / error[-2]) / math.log(calls[-1] / calls[-2])


def _fixed(result: dict):
    """(path name, solver name, record) of every fixed-step solver of part (a)."""
    for pname, prec in result["likelihood"].items():
        for name, rec in prec["solvers"].items():
            if not rec["adaptive"]:
                yield pname, name, rec


def likelihood_table(result: dict) -> str:
    """Part (a): per solver and path, the error at the fewest and the most steps, calls and the last slope."""
    paths = list(result["likelihood"])
    rows = []
    for name, first in result["likelihood"][paths[0]]["solvers"].items():
        row = [name, first["order"]]
        for pname in paths:
            r = result["likelihood"][pname]["solvers"][name]
            if r["adaptive"]:
                row.append(f"rtol {r['rtol'][0]:g}: {num(r['error'][0])} ({r['calls'][0]}); rtol {r['rtol'][-1]:g}: "
                           f"{num(r['error'][-1])} ({r['calls'][-1]} calls)")
            else:
                row.append(f"{num(r['error'][0])} ({r['calls'][0]}) → {num(r['error'][-1])} ({r['calls'][-1]} "
                           f"calls), slope {slope(r['calls'], r['error']):.2f}")
        rows.append(row)
    heads = [f"{p}: {result['likelihood'][p]['path']}" for p in paths]
    return md_table(["solver", "order", *heads], rows)


def sampling_table(result: dict, key: str) -> str:
    """Part (b): per sampler and path, ``key`` (tv or kl) at each step count (adaptive: its one grid)."""
    paths = result["sampling"]["paths"]
    heads, rows = [], {}
    for pname, prec in paths.items():
        steps = max((r["steps"] for r in prec["samplers"].values()), key=len)
        heads.append(f"{pname} (K = {'/'.join(map(str, steps))})")
        for name, r in prec["samplers"].items():
            cells = [num(v) for v in r[key]] if r["steps"] == steps else [
                f"K={k}: {num(v)} ({c:.0f} calls)" for k, v, c in zip(r["steps"], r[key], r["calls"], strict=True)]
            rows.setdefault(name, [name, r["kind"]]).append(" / ".join(cells))
    return md_table(["sampler", "kind", *heads], list(rows.values()))


def exact_tolerance(floor: dict, n: int) -> float:
    """4 standard errors of the mean TV of ``n`` independent exact decodings, minus the floor's estimated mean."""
    return 4 * floor["tv_sd"] * math.sqrt(1 / n + 1 / floor["replicates"])


def _range(values) -> str:
    """``"min to max"`` of ``values``, three significant digits."""
    values = list(values)
    return f"{num(min(values))} to {num(max(values))}"


def likelihood_reading(result: dict) -> list[str]:
    """Sentences on part (a) (C2, C11)."""
    fixed = list(_fixed(result))
    falling = [(p, n) for p, n, r in fixed if all(b < a for a, b in itertools.pairwise(r["error"]))]
    bad = [f"{n} on {p}" for p, n, r in fixed if (p, n) not in falling]
    lik = result["likelihood"]
    out = [f"- (a) In {len(falling)} of {len(fixed)} (fixed-step solver, path) pairs the likelihood error falls at "
           f"every doubling of the steps" + (f"; not for {', '.join(bad)}." if bad else ".")]
    slopes = {}
    for _, n, r in fixed:
        slopes.setdefault((n, r["order"]), []).append(slope(r["calls"], r["error"]))
    out.append("- Slopes of log error against log calls over the last doubling (a solver of order q tends to "
               "-q once its steps are small against the stiff end near t_min): "
               + "; ".join(f"{n} (order {q}) {_range(v)}" for (n, q), v in slopes.items()) + ".")
    for pname, prec in lik.items():
        best = min(((n, r) for n, r in prec["solvers"].items() if not r["adaptive"]), key=lambda nr: nr[1]["error"][-1])
        out.append(f"- {pname}: the smallest fixed-step error is {best[0]}'s {num(best[1]['error'][-1])} nats with "
                   f"{best[1]['calls'][-1]} calls" + "".join(
                       f"; {n} at rtol {r['rtol'][-1]:g}: {num(r['error'][-1])} with {r['calls'][-1]} calls"
                       for n, r in prec["solvers"].items() if r["adaptive"]) + ".")
    if "rk4" in lik["AR"]["solvers"] and "ddim" in lik["AR"]["solvers"]:
        ratio = [p["solvers"]["ddim"]["error"][-1] / p["solvers"]["rk4"]["error"][-1] for p in lik.values()]
        out.append(f"- At equal steps (the most), rk4's error is {_range(ratio)} times smaller than ddim's on the four "
                   "paths (for 4 times the calls). Every path converges to the same oracle log-density (C2, C11).")
    return out


def sampling_reading(result: dict) -> list[str]:
    """Sentences on part (b) (C8, C14)."""
    s = result["sampling"]
    f, pr, N = s["floor"], s["product"], s["batch"]
    ar, sync = s["paths"]["AR"]["samplers"], s["paths"]["synchronous"]["samplers"]
    one = [r["tv"][0] for r in sync.values() if r["steps"][0] == 1]
    jump = [r["tv"][0] for r in ar.values() if r["steps"][0] == 6]
    mean, tol = sum(jump) / len(jump), exact_tolerance(f, len(jump))
    out = [f"- (b) Floor: {N} exact samples have TV {num(f['tv'])} ± {num(f['tv_sd'], 2)} and KL {num(f['kl'])} ± "
           f"{num(f['kl_sd'], 2)} (mean ± sd of {f['replicates']} replicates): finite-sample noise, not error.",
           f"- One synchronous step (C8, C14): every sampler's TV is {_range(one)}, against {num(pr['tv'])} ± "
           f"{num(pr['tv_sd'], 2)} for {N} samples of the product of the marginals (exact TV(prod_i p(x_i), p) = "
           f"{num(s['tv_product_of_marginals'])}): one step draws each token from its marginal, whatever the solver.",
           f"- AR with one jump per token (K = 6, C14): every sampler's TV is {_range(jump)}, their mean "
           f"{num(mean)} against the floor's {num(f['tv'])}: "
           + ("within 4 standard errors (" + num(tol, 2) + "), as exact sampling must be: AR decoding samples p(x) "
              "exactly, whatever the solver." if mean < f["tv"] + tol else
              f"MORE than 4 standard errors ({num(tol, 2)}) above it.")]
    longest = {n: r for n, r in ar.items() if len(r["steps"]) > 1}
    if "tokens" in longest:
        tok = longest["tokens"]
        odes = {n: r["tv"][-1] for n, r in longest.items() if r["kind"] == "ode"}
        worst = max(odes, key=odes.get)
        above = odes[worst] > f["tv"] + 3 * f["tv_sd"]
        out.append(f"- AR with {tok['steps'][-1] // 6} steps per token: the token sampler's TV is {num(tok['tv'][-1])} "
                   f"(the mixture kernel is the exact reverse kernel along Staircase(1) at any step count, C7), the "
                   f"ODE solvers' {_range(odes.values())} ({worst} worst, "
                   + ("above the floor + 3 sd: between commits an ODE solver adds its discretization error, which one "
                      "jump per token avoids)." if above else "within the floor + 3 sd)."))
    for pname in ("block", "rolling", "synchronous"):
        recs = s["paths"][pname]["samplers"]
        full = {n: r for n, r in recs.items() if len(r["steps"]) > 1}
        parts = []
        for i in (-2, -1):
            best = min(full, key=lambda n, i=i: full[n]["tv"][i])
            b, tok = full[best], full["tokens"]
            parts.append(f"at K = {b['steps'][i]} the best is {best} ({num(b['tv'][i])}, {b['calls'][i]:.0f} calls) "
                         f"against the token sampler's {num(tok['tv'][i])}")
        out.append(f"- {pname}: " + "; ".join(parts) + f" (floor {num(f['tv'])}).")
    out += adaptive_reading(s)
    return out


def adaptive_reading(s: dict) -> list[str]:
    """The adaptive methods in (b) against rk4 on the same grid (their ODE error is far below rk4's)."""
    pairs = []
    for pname, prec in s["paths"].items():
        recs = prec["samplers"]
        for name, r in recs.items():
            if len(r["steps"]) == 1 and "rk4" in recs and r["steps"][0] in recs["rk4"]["steps"]:
                i = recs["rk4"]["steps"].index(r["steps"][0])
                pairs.append((pname, name, r["steps"][0], r["tv"][0], r["calls"][0], recs["rk4"]["tv"][i],
                              recs["rk4"]["calls"][i]))
    if not pairs:
        return []
    sd = s["floor"]["tv_sd"]
    better = [p for p in pairs if p[3] < p[5] - 3 * sd]
    return ["- Adaptive methods on one grid per path: " + "; ".join(
        f"{n} on {p} (K = {k}) TV {num(tv)} with {c:.0f} calls vs rk4's {num(tv4)} with {c4:.0f}"
        for p, n, k, tv, c, tv4, c4 in pairs) + (". None is better than rk4 by more than 3 sd of the floor: on "
        "these grids rk4's flow is already accurate enough for sampling, for a fraction of the calls."
        if not better else f". {len(better)} of {len(pairs)} beat rk4 by more than 3 sd of the floor.")]


def reading(result: dict) -> list[str]:
    """All sentences of the README's 'What it shows'."""
    return likelihood_reading(result) + sampling_reading(result)


def readme(result: dict) -> str:
    """The study's README.md."""
    s = result["sampling"]
    quick = " --quick" if result["quick"] else ""
    return "\n".join([
        "# e02: solvers and paths: exact likelihood and sample quality against network calls",
        "",
        "**Question.** Along the AR staircase, a block staircase, a rolling window and the synchronous diagonal, "
        "how fast does each registered solver reach (a) the exact log-likelihood through the flow (C2, C11) and "
        "(b) the exact law of the sequences when decoding with `evoflow.generate` (C14), per network call?",
        "",
        f"**Command.** `.venv/bin/python -m experiments.e02_solvers_paths.run{quick}` ({result['seconds']:.0f} s, "
        "one CPU thread; `--quick` is the test's size).",
        "",
        f"Oracle {result['oracle']} (all 4096 sequences enumerable). Solvers: {', '.join(result['config']['solvers'])}"
        " (`evoflow.solvers.names()`).",
        "",
        f"## (a) Exact-likelihood error against calls (t_min = {result['t_min']:g})",
        "",
        f"Mean over {result['config']['latents']} latents z ~ p_t_min of |`flow_log_likelihood` - "
        "`oracle.log_marginal`| in nats, exact divergence; cells: error (calls) at the fewest → the most steps "
        "and the slope of the last doubling. Adaptive methods run on the fewest-step grid at rtol 1e-3, 1e-5, 1e-7.",
        "",
        likelihood_table(result),
        "",
        "![likelihood error against calls](likelihood_error.png)",
        "",
        "## (b) Sample quality against calls",
        "",
        f"`generate(oracle, 6, path, steps=K, solver=name, batch={s['batch']})`; `tokens` is solver None (the "
        "mixture kernel's reverse step). Total variation over all 4096 sequences at each K "
        f"(floor: {s['batch']} exact samples, TV {num(s['floor']['tv'])} ± {num(s['floor']['tv_sd'], 2)}):",
        "",
        sampling_table(result, "tv"),
        "",
        f"Plug-in KL(p_hat || p) (floor {num(s['floor']['kl'])} ± {num(s['floor']['kl_sd'], 2)}):",
        "",
        sampling_table(result, "kl"),
        "",
        "![TV against calls](sample_tv.png)",
        "",
        *readme_ending(reading(result)),
    ]) + "\n"
