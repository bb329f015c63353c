"""Distribution of the Transformer with PyTorch's own engine: FSDP2, checkpointing, compile, precision.

Kept apart from :mod:`evoflow.nn.transformer`, which stays a pure model. The recipe for a large
model (THEORY section 8, C12; the torchtitan order):

    mesh = init_distributed()                          # torchrun's world, or one process
    with torch.device("meta"):
        model = EvoTransformer(get_config("8b"))       # shapes only, no memory
    parallelize(model, mesh)                           # checkpoint -> compile -> fully_shard
    materialize(model, "cuda")                         # allocate the local shards, then init

``parallelize`` shards every Transformer block as one FSDP2 unit and then the root, keeps
parameters in float32 and computes in ``param_dtype`` (bf16) with gradients reduced in float32.
The root may be a module that *holds* the Transformer (e.g. a training objective): everything it
uses outside the blocks, the latent embedding table included, is then gathered in its forward.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from evoflow.nn.transformer import EvoTransformer

__all__ = ["init_distributed", "materialize", "parallelize"]


def init_distributed(device_type: str | None = None) -> DeviceMesh:
    """A 1-D data-parallel mesh over every process, for training the model of THEORY section 8.

    Under ``torchrun`` the world comes from its environment; a single process needs no launcher
    (a world of one on an in-memory store). Backend ``nccl`` on CUDA, ``gloo`` on CPU.
    """
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        if "RANK" in os.environ:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=("dp",))


def find_transformer(module: nn.Module) -> EvoTransformer:
    """The one :class:`EvoTransformer` inside ``module`` (possibly ``module`` itself)."""
    found = [m for m in module.modules() if isinstance(m, EvoTransformer)]
    if len(found) != 1:
        raise ValueError(f"module must hold exactly one EvoTransformer, found {len(found)}")
    return found[0]


def parallelize(
    module: nn.Module,
    mesh: DeviceMesh | None = None,
    *,
    checkpoint: bool = True,
    compile: bool = False,
    param_dtype: torch.dtype | None = torch.bfloat16,
    reduce_dtype: torch.dtype | None = torch.float32,
) -> nn.Module:
    """Apply activation checkpointing, ``torch.compile`` and FSDP2 to each block, then FSDP2 to the root.

    The model of THEORY section 8 (C12) is left unchanged as a function: only where its
    parameters live, how its activations are kept and in which precision it computes change.

    ``mesh=None`` (one process, no sharding) applies checkpointing and compile only; use
    ``torch.autocast`` for reduced precision there. With a mesh, parameters stay in their dtype
    (float32) when sharded, are gathered as ``param_dtype`` for compute, and gradients are
    reduced in ``reduce_dtype``; ``param_dtype=None`` computes in float32. No module casts its
    inputs: per-token times must reach the time embedding in full precision. Returns ``module``.
    """
    if mesh is not None and mesh.ndim != 1:
        raise ValueError(f"mesh must be one-dimensional (data parallel), got {mesh.ndim} dimensions")
    model = find_transformer(module)
    # No input casting: the model casts z itself; times and rotary angles stay in full precision.
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype, cast_forward_inputs=False)
    blocks = model.blocks
    for i, block in enumerate(blocks):
        if checkpoint:
            block = checkpoint_wrapper(block, preserve_rng_state=False)
        if compile:
            block.compile()
        if mesh is not None:
            # The last block is needed first in backward: keep it gathered after forward.
            fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=i < len(blocks) - 1)
        blocks[i] = block
    if mesh is not None:
        fully_shard(module, mesh=mesh, mp_policy=policy)
    return module


def materialize(module: nn.Module, device: torch.device | str, seed: int | None = 0) -> nn.Module:
    """Allocate a meta-device (possibly sharded) module on ``device`` and initialise its Transformer (C12 model).

    Seeds torch's generator with ``seed`` first. On CUDA, DTensor's random ops draw each shard as
    its part of the full tensor; elsewhere they draw shards locally, so each rank adds its rank
    to the seed there (shards then differ, as they should, but do not match an unsharded init).
    """
    device = torch.device(device)
    if seed is not None:
        rank = dist.get_rank() if dist.is_initialized() and device.type != "cuda" else 0
        torch.manual_seed(seed + rank)
    module.to_empty(device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DTensor random operators may not have complete support")
        find_transformer(module).init_weights()
    return module
