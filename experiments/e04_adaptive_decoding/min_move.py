"""Does ``EvoController(min_move=)`` improve e04's oracle? (a side check for the defaults; THEORY section 4, C14)

    .venv/bin/python -m experiments.e04_adaptive_decoding.min_move

e04's easy/hard oracle, L = 32, N = 2000, seed 0: calls per sequence, adjacent-pair TV to the true p(x) and the
samples' true NLL for the other defaults with several ``min_move`` (0.01 is the default), and two references
(AR, block:2 with one jump per block). Printed as the rows of a markdown table.
"""

import torch

import evoflow as ef
from experiments.e04_adaptive_decoding.run import easy_hard_oracle, pair_tv


def main() -> None:
    torch.set_num_threads(2)
    L, N, seed = 32, 2000, 0
    oracle = easy_hard_oracle(L, seed=seed)
    rows = [(f"defaults, min_move={m}", ef.EvoController(min_move=m), None) for m in (0.0, 0.001, 0.01, 0.1)]
    rows += [("window=8, min_commits=2, min_move=0.01", ef.EvoController(window=8, min_commits=2, min_move=0.01),
              None), ("ar", ef.Staircase(1), None), ("block:2, one jump", ef.Staircase(2), L // 2)]
    print("| controller | calls / sequence | pair TV | E_q[-log p] |\n|---|---|---|---|")
    for label, ctrl, steps in rows:
        r = ef.generate(oracle, L, ctrl, steps=steps, batch=N, generator=torch.Generator().manual_seed(seed + 2))
        print(f"| {label} | {float(r.calls_per_sequence.double().mean()):.2f} | {pair_tv(oracle, r.tokens):.4f} | "
              f"{float(-oracle.log_prob(r.tokens).mean()):.3f} |", flush=True)


if __name__ == "__main__":
    main()
