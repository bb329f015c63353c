"""Distribution of the Transformer: FSDP2 over two gloo processes equals one process (THEORY section 8, C12).

The multi-process test launches bench/fsdp_step.py under torchrun, the script the README shows.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evoflow.nn import EvoTransformer, get_config, parallelize
from evoflow.nn.parallel import find_transformer

ROOT = Path(__file__).resolve().parents[2]


def run_script(args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{") and line.endswith("}")]


@pytest.mark.dist
def test_two_process_fsdp_step_equals_the_single_process_step():
    """Two processes, gloo, FSDP2 with activation checkpointing: loss and updated parameters within 1e-5."""
    (result,) = run_script(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "bench/fsdp_step.py", "--config", "tiny", "--check", "--batch", "4", "--seq", "12"])
    assert result["processes"] == 2 and result["checkpoint"] and result["dtype"] == "fp32"
    assert result["loss_diff"] <= 1e-5
    assert result["max_param_diff"] <= 1e-5
    assert result["max_update"] > 1e-4  # the step moved the parameters, so equality is not vacuous
    assert result["check_passed"]


@pytest.mark.dist
def test_single_process_needs_no_launcher():
    """The meta-device recipe in one plain process: build on meta, parallelise, materialise, step."""
    (result,) = run_script(["bench/fsdp_step.py", "--config", "tiny", "--steps", "2", "--seq", "8"])
    assert result["processes"] == 1 and len(result["step_s"]) == 2
    assert torch.isfinite(torch.tensor(result["loss"]))


def test_gpu_check_dry_run_exercises_the_script(tmp_path):
    """bench/gpu_check.py on CPU with tiny sizes: peak, throughput/MFU, training loop and sharded step all report."""
    run_script(["bench/gpu_check.py", "--dry-run", "--out", str(tmp_path / "check.json")])
    result = json.loads((tmp_path / "check.json").read_text())
    tp, big = result["throughput"], result["sharded_step"]
    assert tp["peak_flops"] > 0 and tp["device"] == "cpu"
    assert "error" not in tp and "error" not in big, (tp, big)
    assert tp["tokens_per_s"] > 0 and tp["mfu"] > 0 and tp["flops_per_token"] > 0
    assert big["config"] == "tiny" and len(big["step_s"]) == 2
    (loop,) = result["training_loop"]["runs"]  # the real training loop, one size on CPU
    assert loop["config"] == "tiny" and loop["tokens_per_s"] > 0 and loop["mfu"] > 0


def test_parallelize_without_a_mesh_keeps_the_function():
    """Checkpointing (no mesh) wraps each block but changes neither outputs nor gradients."""
    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny"))
    reference = EvoTransformer(get_config("tiny"))
    reference.load_state_dict(model.state_dict())
    parallelize(model, None, checkpoint=True)
    assert all(type(b).__name__ == "CheckpointWrapper" for b in model.blocks)
    assert model.state_dict().keys() == reference.state_dict().keys()
    z = torch.randn(2, 5, 16, requires_grad=True)
    tau = torch.rand(2, 5)
    a, b = model(z, tau).logits, reference(z, tau).logits
    torch.testing.assert_close(a, b)
    (ga,) = torch.autograd.grad(a.sum(), z)
    (gb,) = torch.autograd.grad(b.sum(), z)
    torch.testing.assert_close(ga, gb)


def test_parallelize_finds_the_transformer_inside_a_wrapper():
    model = EvoTransformer(get_config("tiny"))
    wrapper = torch.nn.Sequential(torch.nn.Identity(), model)
    assert find_transformer(wrapper) is model
    with pytest.raises(ValueError, match="exactly one EvoTransformer, found 0"):
        find_transformer(torch.nn.Linear(2, 2))


def test_layering():
    """The core never imports evoflow.nn, and the pure model files know nothing of distribution."""
    code = "import sys, evoflow; print('evoflow.nn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    for name in ("transformer", "attention", "cache", "config"):
        tree = ast.parse((ROOT / "evoflow" / "nn" / f"{name}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.startswith(("torch.distributed", "evoflow.nn.parallel")) for m in imported), name


def test_mfu_numerator_matches_torch_flop_counter():
    """gpu_check's FLOPs per token agree with torch's FlopCounterMode on a forward + backward of the loss.

    The math attention backend spells attention out as batched products, which the counter sees; the
    time MLP's first layer needs no input gradient, so the formula overcounts it slightly (< 3%).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from fsdp_step import DenoisingObjective, make_batch
        from gpu_check import flops_per_token
    finally:
        sys.path.remove(str(ROOT / "bench"))
    torch.manual_seed(0)
    objective = DenoisingObjective(EvoTransformer(get_config("tiny")))
    batch, seq = 2, 24
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        objective(*make_batch(objective.model.config, batch, seq, seed=0, device="cpu")).backward()
    measured = counter.get_total_flops() / (batch * seq)
    assert abs(flops_per_token(objective.model, seq) - measured) <= 0.03 * measured


@pytest.mark.slow
@pytest.mark.dist
def test_compiled_blocks_under_fsdp_equal_the_single_process_step():
    """torch.compile per block (inductor on CPU, about a minute) inside the same two-process check."""
    (result,) = run_script(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "bench/fsdp_step.py", "--config", "tiny", "--check", "--compile"], timeout=600)
    assert result["compile"] and result["check_passed"] and result["max_param_diff"] <= 1e-5
