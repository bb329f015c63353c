"""Checkpoints: exact round trips, verification on load, retention, and survival of SIGKILL mid-save."""

import hashlib
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import evoflow.train.checkpoint as ck
from evoflow.train.checkpoint import (
    CheckpointError,
    checkpoint_steps,
    flatten_state,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unflatten_state,
)

REPO = Path(__file__).resolve().parents[2]


def _net_and_adamw(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    return net, torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1, betas=(0.8, 0.95))


def _train(net, opt, steps):
    for _ in range(steps):
        x = torch.randn(4, 5)
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()


def _assert_same(a, b, where="root"):
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b) and all(type(k) is type(j) for k, j in zip(a, b, strict=True)), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}.{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b)), where


def test_training_continues_bit_for_bit_after_save_and_load(tmp_path):
    net, opt = _net_and_adamw()
    _train(net, opt, 3)
    save_checkpoint(tmp_path, 3, net.state_dict(), opt, meta={"rng": rng_state(), "config": {"lr": 1e-2}})
    _train(net, opt, 4)                                       # the reference continues without save/load
    fresh, fresh_opt = _net_and_adamw(seed=1)
    ckpt = load_checkpoint(tmp_path)
    fresh.load_state_dict(ckpt.model)
    fresh_opt.load_state_dict(ckpt.optimizer)
    set_rng_state(ckpt.meta["rng"])                           # the same batches as the reference drew
    _train(fresh, fresh_opt, 4)
    assert ckpt.step == 3 and ckpt.meta["config"] == {"lr": 1e-2}
    for (name, p), q in zip(net.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q), name
    _assert_same(opt.state_dict(), fresh_opt.state_dict())


def test_rng_state_round_trip_repeats_the_next_draws():
    random.seed(3)
    torch.manual_seed(3)
    random.gauss(0, 1)                                        # leaves a cached gauss_next in the state
    tensors, skeleton = flatten_state(rng_state())
    state = unflatten_state(tensors, json.loads(json.dumps(skeleton)))
    first = (random.random(), random.gauss(0, 1), torch.rand(3))
    set_rng_state(state)
    again = (random.random(), random.gauss(0, 1), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_flatten_unflatten_is_exact_on_tricky_structures():
    obj = {
        0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3).to(torch.bfloat16)},
        7: [torch.arange(5), torch.zeros(0, 2), torch.tensor(True)],
        "nested": (1, (2.5, None), [True, "s", ()], {}),
        (1, "a"): {"inf": math.inf, "-inf": -math.inf, "nan": math.nan, "neg0": -0.0, "big": 2**70},
        "bool": False, None: "none key", 1.5: "float key", "same": None,
    }
    tensors, skeleton = flatten_state(obj)
    assert all(isinstance(k, str) for k in tensors) and len(tensors) == 5
    restored = unflatten_state(tensors, json.loads(json.dumps(skeleton, allow_nan=False)))
    _assert_same(obj, restored)
    assert restored[0]["step"].dim() == 0 and restored[0]["exp_avg"].dtype == torch.bfloat16
    with pytest.raises(TypeError, match="at x"):
        flatten_state({"x": object()})
    with pytest.raises(ValueError, match="missing"):
        unflatten_state({}, skeleton)


def _save_two(run):
    net, opt = _net_and_adamw()
    for step in (1, 2):
        _train(net, opt, 1)
        save_checkpoint(run, step, net.state_dict(), opt, meta={"rng": rng_state()})
    return run / "checkpoints" / "step-00000001", run / "checkpoints" / "step-00000002"


def _flip(path, where):
    data = bytearray(path.read_bytes())
    data[where] ^= 0x01
    path.write_bytes(bytes(data))


def _sha_in_manifest(path):                                   # valid JSON, one hex digit of a sha256 changed
    manifest = json.loads(path.read_text())
    sha = manifest["files"]["model.safetensors"]["sha256"]
    manifest["files"]["model.safetensors"]["sha256"] = ("0" if sha[0] != "0" else "1") + sha[1:]
    path.write_text(json.dumps(manifest))


DAMAGE = {
    "flipped byte in model.safetensors": ("model.safetensors", lambda p: _flip(p, -3)),
    "truncated optimizer.safetensors": ("optimizer.safetensors", lambda p: p.write_bytes(p.read_bytes()[:-10])),
    "deleted state.json": ("state.json", lambda p: p.unlink()),
    "flipped byte in manifest.json": ("manifest.json", lambda p: _flip(p, len(p.read_bytes()) // 2)),
    "altered sha256 in manifest.json": ("manifest.json", _sha_in_manifest),
    "truncated manifest.json": ("manifest.json", lambda p: p.write_bytes(p.read_bytes()[:40])),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_the_previous_one_is_used(tmp_path, case):
    name, damage = DAMAGE[case]
    good, bad = _save_two(tmp_path)
    damage(bad / name)
    with pytest.raises(CheckpointError, match=name) as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match=name):
        assert latest_checkpoint(tmp_path) == good
    with pytest.warns(UserWarning, match=name):
        assert load_checkpoint(tmp_path).step == 1


def test_keep_retains_the_newest_checkpoints(tmp_path):
    weights = {"w": torch.ones(3)}
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, weights, keep=2)
    assert checkpoint_steps(tmp_path) == [4, 5]
    save_checkpoint(tmp_path, 6, weights, keep=3)
    assert checkpoint_steps(tmp_path) == [4, 5, 6]
    save_checkpoint(tmp_path, 7, weights, keep=1)
    assert checkpoint_steps(tmp_path) == [7]
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text()) == {"step": 7, "dir": "step-00000007"}
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 8, weights, keep=0)


def test_leftovers_of_interrupted_saves_are_ignored_then_cleaned(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(3)})
    tmp = tmp_path / "checkpoints" / ".tmp-step-00000002-999-abcd"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"half")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(tmp_path).name == "step-00000001"
    save_checkpoint(tmp_path, 3, {"w": torch.ones(3)})
    assert not tmp.exists() and checkpoint_steps(tmp_path) == [1, 3]


def test_missing_or_dangling_latest_json_falls_back_to_scanning(tmp_path):
    _, newest = _save_two(tmp_path)
    latest = tmp_path / "checkpoints" / "latest.json"
    latest.unlink()
    assert latest_checkpoint(tmp_path) == newest
    latest.write_text(json.dumps({"step": 99, "dir": "step-00000099"}))
    with pytest.warns(UserWarning, match="latest.json"):
        assert latest_checkpoint(tmp_path) == newest


def test_latest_json_wins_over_a_higher_step(tmp_path):
    save_checkpoint(tmp_path, 5, {"w": torch.ones(1)})
    save_checkpoint(tmp_path, 3, {"w": torch.zeros(1)})       # resumed from an earlier step
    assert latest_checkpoint(tmp_path).name == "step-00000003" and checkpoint_steps(tmp_path) == [3, 5]


def test_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None and checkpoint_steps(tmp_path) == []
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path)


def test_shared_and_strided_tensors_are_saved(tmp_path):
    base = torch.arange(12.0)
    model = {"a": base, "tied": base, "view": base[2:6], "t": base.view(3, 4).t()}
    ckpt = load_checkpoint(save_checkpoint(tmp_path, 0, model))
    for k, v in model.items():
        assert torch.equal(ckpt.model[k], v), k


def test_a_failed_save_leaves_the_previous_state(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(2)})

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "rename", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, {"w": torch.ones(2)})
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.json", "step-00000001"]
    assert load_checkpoint(tmp_path).step == 1


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["EVOFLOW_TEST_MARKER"]),))


def test_loading_never_unpickles(tmp_path, monkeypatch):
    ckpt_dir = save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, torch.optim.SGD([torch.nn.Parameter(
        torch.ones(2))], lr=0.1, momentum=0.9), meta={"rng": rng_state()})

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load")

    for owner, name in [(pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(owner, name, refuse)
    assert load_checkpoint(tmp_path).step == 1
    monkeypatch.undo()
    marker = tmp_path / "unpickled"                           # a pickle that touches marker when unpickled,
    monkeypatch.setenv("EVOFLOW_TEST_MARKER", str(marker))    # with a manifest rewritten to match it
    torch.save({"w": _Evil()}, ckpt_dir / "model.safetensors")
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    data = (ckpt_dir / "model.safetensors").read_bytes()
    manifest["files"]["model.safetensors"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    body = {k: manifest[k] for k in ("format", "step", "files")}
    manifest["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    (ckpt_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(ckpt_dir)
    assert not marker.exists()


WORKER = """
import os, sys, torch
from evoflow.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
run = sys.argv[1]
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # pays the lazy imports once, before any fork
for line in sys.stdin:                      # a fork server: torch is imported once, each worker is a child
    if line.strip() == "reap":
        os.waitpid(int(pid), 0); print("reaped", flush=True); continue
    pid = os.fork()
    if pid:
        continue
    torch.set_num_threads(1)
    step = load_checkpoint(run).step + 1 if latest_checkpoint(run) else 0
    w = torch.nn.Parameter(torch.zeros(1 << 20))
    opt = torch.optim.AdamW([w], lr=1e-3)
    w.grad = torch.ones_like(w); opt.step()
    print("ready", os.getpid(), flush=True)
    while True:
        with torch.no_grad():
            w.fill_(step)
        save_checkpoint(run, step, {"w": w, "b": torch.full((5,), step)}, opt, meta={"step": step}, keep=2)
        step += 1
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker is forked from a server that imported torch once")
def test_sigkill_at_random_moments_never_leaves_a_bad_latest_checkpoint(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    delays, steps, interrupted = random.Random(0), [], 0
    try:
        for _ in range(10):
            server.stdin.write("go\n")
            server.stdin.flush()
            word, pid = server.stdout.readline().split()
            assert word == "ready"
            time.sleep(delays.uniform(0.0, 0.4))
            os.kill(int(pid), signal.SIGKILL)
            server.stdin.write("reap\n")
            server.stdin.flush()
            assert server.stdout.readline().strip() == "reaped"
            interrupted += any(p.name.startswith(".") for p in (tmp_path / "run" / "checkpoints").iterdir())
            with warnings.catch_warnings():
                warnings.simplefilter("error")              # no fallback: the latest is always complete
                if latest_checkpoint(tmp_path / "run") is None and not steps:
                    continue                                # killed before the first save completed
                ckpt = load_checkpoint(tmp_path / "run")
            assert ckpt.meta == {"step": ckpt.step} and torch.equal(ckpt.model["w"], torch.full((1 << 20,), ckpt.step))
            assert torch.equal(ckpt.model["b"], torch.full((5,), ckpt.step))
            assert ckpt.optimizer["state"][0]["exp_avg"].shape == (1 << 20,)
            steps.append(ckpt.step)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    assert steps == sorted(steps) and steps[-1] >= 3, steps
    assert interrupted >= 3, f"only {interrupted} of 10 kills landed inside a save"
    print(f"{interrupted} of 10 kills landed inside a save; steps {steps}")
