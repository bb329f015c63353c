"""GPU check of the Transformer in one prepared script (THEORY section 8, C12); under 8 minutes on one H200.

    python bench/gpu_check.py --out gpu_check.json      # one GPU: the three measurements below
    python bench/gpu_check.py --dry-run                 # CPU, tiny sizes: the same code paths in seconds

1. peak: measured bf16 matmul throughput (n = 8192 products), the denominator of MFU.
2. 1b throughput: tokens/s of forward + backward + AdamW steps of the ``1b`` configuration
   (bf16 compute, fp32 master weights and reduction, ``torch.compile`` per block, FSDP2 over
   one process), and model FLOPs utilisation

       MFU = tokens/s * (6 N_matmul + 6 V d_latent + 12 layers L width) / peak,

   N_matmul the weights of every linear layer, 6 V d_latent the posterior-mean product of the
   loss, 12 layers L width the bidirectional attention scores and mixing. Goal: MFU >= 40%.
3. training loop: ``evoflow train``'s own loop (:class:`evoflow.train.loop.Run`: the default path mixture,
   bf16 autocast, ``torch.compile`` per block) on the standard library's source for ``150m`` and ``1b``, a few
   steps each: tokens/s (data tokens) and MFU counted with the single-stream FLOPs per data token (a lower
   bound: two-stream rows process twice the positions).
4. 8b step: one (then a second) forward + backward + optimizer step of ``8b`` built on the meta
   device, FSDP2 and activation checkpointing (bench/fsdp_step.py): step time and peak memory.
   AdamW keeps 16 bytes per parameter (fp32 weights, gradients and two moments), about 120 GiB
   at 8B, which one H200 holds.

Phases 1-2, 3 and 4 each run in a fresh child process, so that each has the whole GPU and
a failure in one still lets the other report. The parent prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fsdp_step import DenoisingObjective, make_batch, make_optimizer, train_step

from evoflow.nn import EvoTransformer, get_config, init_distributed, materialize, parallelize

BENCH = Path(__file__).resolve().parent


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int, dtype: torch.dtype, reps: int = 20) -> float:
    """Measured matmul throughput in FLOP/s: ``2 n^3`` per product, best of ``reps`` timed products."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def flops_per_token(model: EvoTransformer, seq: int) -> float:
    """Training FLOPs per token: 6 per matmul weight, the loss's V x d product, attention over seq keys."""
    cfg = model.config
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 6 * matmul + 6 * cfg.vocab * cfg.d_latent + 12 * cfg.layers * seq * cfg.width


def throughput(args) -> dict:
    """Phases 1-2 (child process): matmul peak, then tokens/s and MFU of ``args.config`` under FSDP2."""
    device = torch.device("cuda") if torch.cuda.is_available() and not args.dry_run else torch.device("cpu")
    cuda = device.type == "cuda"
    peak = matmul_peak(device, 8192, torch.bfloat16) if cuda else matmul_peak(device, 256, torch.float32, reps=5)
    mesh = init_distributed(device.type)
    cfg = get_config(args.config)
    with torch.device("meta"):
        objective = DenoisingObjective(EvoTransformer(cfg))
    parallelize(objective, mesh, checkpoint=False, compile=args.compile, param_dtype=torch.bfloat16 if cuda else None)
    materialize(objective, device)
    opt = make_optimizer(objective, device)
    batch = make_batch(cfg, args.batch, args.seq, seed=0, device=device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):  # includes compilation
        train_step(objective, opt, batch)
    sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step(objective, opt, batch)
    sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    tokens_per_s = args.batch * args.seq / step_s
    fpt = flops_per_token(objective.model, args.seq)
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "peak_flops": peak,
        "config": args.config, "batch": args.batch, "seq": args.seq, "dtype": "bf16" if cuda else "fp32",
        "compile": args.compile, "warmup_s": warm_s, "step_s": step_s, "tokens_per_s": tokens_per_s,
        "flops_per_token": fpt, "mfu": tokens_per_s * fpt / peak, "loss": loss.item(),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def training_loop(args) -> dict:
    """Phase 3 (child process): a few steps of the real training loop per size; tokens/s and MFU."""
    import tempfile

    from evoflow.train.config import TrainConfig
    from evoflow.train.loop import Run

    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    peak = matmul_peak(device, 8192, torch.bfloat16) if cuda else matmul_peak(device, 256, torch.float32, reps=5)
    out = {"peak_flops": peak, "runs": []}
    sizes = ["tiny"] if args.dry_run else ["150m", "1b"]
    shape = dict(data="pydoc", vocab=512, seq=32, batch=2, steps=3) if args.dry_run else \
        dict(data="stdlib", vocab=8192, seq=1024, batch=8, steps=args.train_steps)
    for size in sizes:
        cfg = TrainConfig(size=size, eval_every=10**6, checkpoint_every=10**6, compile=cuda, **shape)
        t0 = time.perf_counter()
        run = Run(cfg, Path(tempfile.mkdtemp()) / size, False, False, print, 0, 1, None)
        rows = [run._one_step() for _ in range(cfg.steps)]
        timed = sorted(r["tokens_per_s"] for r in rows[2:]) or [rows[-1]["tokens_per_s"]]
        tps = timed[len(timed) // 2]
        fpt = flops_per_token(run.model, cfg.seq)
        out["runs"].append({"config": size, "tokens_per_s": tps, "mfu": tps * fpt / peak, "loss": rows[-1]["loss"],
                            "seconds": time.perf_counter() - t0, "batch": cfg.batch, "seq": cfg.seq,
                            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None})
    return out


def child(cmd: list[str], timeout: float, name: str) -> dict:
    """Run one phase in a fresh process; its last JSON line, or the error."""
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    try:
        proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"config": name, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{") and line.endswith("}")]
    if proc.returncode or not lines:
        return {"config": name, "error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
    return json.loads(lines[-1])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no compile: check the code paths")
    p.add_argument("--phase", choices=["all", "throughput", "train"], default="all", help=argparse.SUPPRESS)
    p.add_argument("--train-steps", type=int, default=8, help="steps of the training-loop phase per size")
    p.add_argument("--config", default="1b", help="configuration for the throughput phase")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--big", default="8b", help="configuration for the sharded-step phase")
    p.add_argument("--big-batch", type=int, default=1)
    p.add_argument("--big-seq", type=int, default=2048)
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole script")
    p.add_argument("--out", default=None, help="also write the JSON results here")
    args = p.parse_args(argv)
    if args.dry_run:
        args.config, args.batch, args.seq, args.warmup, args.steps, args.compile = "tiny", 2, 32, 1, 2, False
        args.big, args.big_seq = "tiny", 32
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.phase in ("throughput", "train"):
        result = throughput(args) if args.phase == "throughput" else training_loop(args)
        print(json.dumps(result), flush=True)
        return result
    start = time.perf_counter()
    flags = ["--dry-run"] if args.dry_run else []
    flags += [] if args.compile else ["--no-compile"]
    tp = child([__file__, "--phase", "throughput", "--config", args.config, "--batch", str(args.batch),
                "--seq", str(args.seq), "--warmup", str(args.warmup), "--steps", str(args.steps), *flags],
               timeout=0.35 * args.budget, name=args.config)
    loop = child([__file__, "--phase", "train", "--train-steps", str(args.train_steps), *flags],
                 timeout=0.35 * args.budget, name="training loop")
    big = child([str(BENCH / "fsdp_step.py"), "--config", args.big, "--batch", str(args.big_batch),
                 "--seq", str(args.big_seq), "--steps", "2", *(["--device", "cpu"] if args.dry_run else [])],
                timeout=max(60.0, args.budget - (time.perf_counter() - start)), name=args.big)
    results = {"throughput": tp, "training_loop": loop, "sharded_step": big, "total_s": time.perf_counter() - start}
    text = json.dumps(results, indent=1)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(f"\npeak matmul {tp.get('peak_flops', 0) / 1e12:.1f} TFLOP/s | {tp['config']}: "
          f"{tp.get('tokens_per_s', 0):.0f} tokens/s, MFU {100 * tp.get('mfu', 0):.1f}% (goal >= 40%) "
          f"{tp.get('error', '')} | loop: " + ", ".join(f"{r['config']} {r['tokens_per_s']:.0f} tokens/s MFU "
                                                         f"{100 * r['mfu']:.1f}%" for r in loop.get("runs", []))
          + f" {loop.get('error', '')} | {big['config']}: steps {big.get('step_s')} s, "
          f"peak {big.get('peak_mem_gib')} GiB {big.get('error', '')}", flush=True)
    return results


if __name__ == "__main__":
    out = main()
    phases = ("throughput", "training_loop", "sharded_step")
    raise SystemExit(1 if any("error" in out.get(k, {}) for k in phases) else 0)
