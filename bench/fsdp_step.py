"""One sharded forward + backward + optimizer step of the Transformer under FSDP2 (THEORY section 8, C12).

    torchrun --nproc_per_node 8 bench/fsdp_step.py --config 8b --batch 8 --seq 2048   # 8 GPUs
    python bench/fsdp_step.py --config 8b --batch 1 --seq 2048                         # 1 GPU, no launcher
    torchrun --standalone --nproc_per_node 2 bench/fsdp_step.py --config tiny --check  # CPU, gloo

The model is built on the meta device, parallelised by ``evoflow.nn.parallelize`` (activation
checkpointing and FSDP2 per block, then the root; bf16 compute and fp32 gradient reduction on
GPU), materialised and initialised; then it takes AdamW steps on a denoising loss over a
global batch split evenly across the processes. ``--check`` (float32) also takes the same step
with one unsharded copy on the whole batch and compares the loss and every updated parameter
(tolerance 1e-5): the sharded step must be the single-process step. Rank 0 prints one JSON line.
The training loop proper (data, schedules of time samplers, checkpoints) is evoflow.train's.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor

from evoflow.nn import EvoTransformer, get_config, init_distributed, materialize, parallelize
from evoflow.process import posterior_mean


class DenoisingObjective(nn.Module):
    """A denoising loss for one batch (the FSDP root, so the embedding table is gathered in its forward).

        z = alpha(t) e_x + sigma(t) noise,   loss = CE(logits, x) + mean ||ehat - e_x||^2 + mean (that - t)^2.
    """

    def __init__(self, model: EvoTransformer):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, tau: Tensor, noise: Tensor) -> Tensor:
        E, schedule = self.model.embeddings, self.model.schedule  # (V, d)
        e = E[x]  # (B, L, d)
        z = schedule.alpha(tau)[..., None] * e + schedule.sigma(tau)[..., None] * noise
        out = self.model(z, tau)
        ce = F.cross_entropy(out.logits.flatten(0, 1), x.flatten())
        mse = (posterior_mean(out.logits, E).float() - e.float()).pow(2).mean()
        return ce + mse + F.mse_loss(out.time, tau.float())


def make_batch(cfg, batch: int, seq: int, seed: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """The global batch, identical on every rank: token ids (B, L), times (B, L) float64, noise (B, L, d)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(cfg.vocab, (batch, seq), generator=g)
    tau = torch.rand(batch, seq, generator=g, dtype=torch.float64)
    noise = torch.randn(batch, seq, cfg.d_latent, generator=g)
    return x.to(device), tau.to(device), noise.to(device)


def make_optimizer(module: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.1, fused=device.type == "cuda")


def train_step(objective: nn.Module, opt: torch.optim.Optimizer, batch: tuple[Tensor, ...]) -> Tensor:
    loss = objective(*batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def timed_steps(objective: nn.Module, opt, batch: tuple[Tensor, ...], steps: int, device) -> tuple:
    """Run ``steps`` training steps; seconds and peak memory (GiB, CUDA only) of each, and the last loss."""
    times, mems = [], []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = train_step(objective, opt, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
            mems.append(torch.cuda.max_memory_allocated() / 2**30)
        times.append(time.perf_counter() - t0)
    return times, mems or None, loss


def plain_name(name: str) -> str:
    return name.replace("_checkpoint_wrapped_module.", "")


def copy_weights(sharded: nn.Module, reference: nn.Module) -> None:
    """Load the full reference parameters into the local shards (every rank holds the reference)."""
    full = {plain_name(n): p for n, p in reference.named_parameters()}
    with torch.no_grad():
        for name, p in sharded.named_parameters():
            src = full[plain_name(name)].to(p.device)
            p.copy_(distribute_tensor(src, p.device_mesh, p.placements) if isinstance(p, DTensor) else src)


def compare(sharded: nn.Module, reference: nn.Module, start: dict[str, Tensor]) -> tuple[float, float]:
    """Max |sharded - reference| over all updated parameters, and the largest update itself."""
    full = {plain_name(n): p.detach() for n, p in reference.named_parameters()}
    diff = moved = 0.0
    for name, p in sharded.named_parameters():
        mine = p.full_tensor() if isinstance(p, DTensor) else p.detach()
        ref = full[plain_name(name)]
        diff = max(diff, (mine.cpu() - ref.cpu()).abs().max().item())
        moved = max(moved, (ref.cpu() - start[plain_name(name)]).abs().max().item())
    return diff, moved


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", help="size name for evoflow.nn.get_config")
    p.add_argument("--batch", type=int, default=4, help="global batch (sequences), split across processes")
    p.add_argument("--seq", type=int, default=16, help="sequence length")
    p.add_argument("--steps", type=int, default=1, help="optimizer steps (time and memory of each are reported)")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="compute dtype (default: bf16 on GPU)")
    p.add_argument("--no-checkpoint", action="store_true", help="turn activation checkpointing off")
    p.add_argument("--compile", action="store_true", help="torch.compile each block")
    p.add_argument("--check", action="store_true", help="float32; compare with one unsharded step (CPU-sized)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if available")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    kind = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    mesh = init_distributed(kind)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else torch.device("cpu")
    if args.batch % world:
        raise ValueError(f"--batch {args.batch} must be divisible by the number of processes {world}")
    bf16 = args.dtype == "bf16" or (args.dtype is None and device.type == "cuda" and not args.check)
    cfg = get_config(args.config)
    with torch.device("meta"):
        objective = DenoisingObjective(EvoTransformer(cfg))
    parallelize(objective, mesh, checkpoint=not args.no_checkpoint, compile=args.compile,
                param_dtype=torch.bfloat16 if bf16 else None)
    materialize(objective, device, seed=args.seed)
    if args.check:
        torch.manual_seed(args.seed)
        reference = DenoisingObjective(EvoTransformer(cfg)).to(device)
        copy_weights(objective, reference)
        start = {plain_name(n): p.detach().cpu().clone() for n, p in reference.named_parameters()}
    opt = make_optimizer(objective, device)
    x, tau, noise = make_batch(cfg, args.batch, args.seq, args.seed, device)
    rows = slice(rank * args.batch // world, (rank + 1) * args.batch // world)
    times, mems, loss = timed_steps(objective, opt, (x[rows], tau[rows], noise[rows]), args.steps, device)
    dist.all_reduce(loss, op=dist.ReduceOp.SUM)
    result = {
        "config": args.config, "processes": world, "device": device.type, "dtype": "bf16" if bf16 else "fp32",
        "parameters": sum(p.numel() for p in objective.parameters()), "tokens_per_step": args.batch * args.seq,
        "checkpoint": not args.no_checkpoint, "compile": args.compile, "loss": loss.item() / world,
        "step_s": times, "peak_mem_gib": mems,
    }
    if args.check:
        ref_opt = make_optimizer(reference, device)
        for _ in range(args.steps):
            ref_loss = train_step(reference, ref_opt, (x, tau, noise))
        diff, moved = compare(objective, reference, start)
        result.update(reference_loss=ref_loss.item(), max_param_diff=diff, max_update=moved,
                      loss_diff=abs(ref_loss.item() - result["loss"]))
        result["check_passed"] = diff <= 1e-5 and result["loss_diff"] <= 1e-5
    if rank == 0:
        print(json.dumps(result), flush=True)
    dist.destroy_process_group()
    return result


if __name__ == "__main__":
    out = main()
    raise SystemExit(0 if out.get("check_passed", True) else 1)
