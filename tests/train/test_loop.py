"""The training loop (evoflow.train.loop): it learns, logs one line per step, resumes a SIGKILLed run exactly,
refuses corrupted checkpoints, ``evoflow eval`` reproduces its figures, and two processes train as one.

Every run is the ``tiny`` model on pydoc with a 512-token BPE, 32 tokens per sequence, a few steps, one
thread (``OMP_NUM_THREADS=1`` for the command, ``torch.set_num_threads(1)`` in this process), so that
figures computed here and in a subprocess are the same floating-point operations.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evoflow.cli import main
from evoflow.nn import EvoTransformer, get_config
from evoflow.train.checkpoint import CheckpointError, checkpoint_steps, load_checkpoint
from evoflow.train.config import DEFAULT_MIXTURE, TrainConfig
from evoflow.train.data import TextTokenizer
from evoflow.train.evaluate import score_path
from evoflow.train.loop import build_model, load_data, train
from evoflow.train.objective import PathMixture
from evoflow.train.session import load_run

ROOT = Path(__file__).resolve().parents[2]
ENV = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
       "OMP_NUM_THREADS": "1"}
SMALL = ["--size", "tiny", "--vocab", "512", "--seq", "32", "--batch", "4"]
RUN20 = [*SMALL, "--steps", "20", "--checkpoint-every", "5", "--eval-every", "10", "--quiet"]
REQUIRED = {"step", "loss", "bound_bits", "tokens_per_s"}
VALIDATION = {"val_ar_bits", "val_sync_bits", "val_sync_stderr", "val_tokens"}


def evoflow(args, timeout=180, launcher=()):
    """``python [launcher] -m evoflow.cli args`` on one thread; the completed process (exit status 0 asserted)."""
    proc = subprocess.run([sys.executable, *launcher, "-m", "evoflow.cli", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_parameters(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert float((a[key].double() - b[key].double()).abs().max()) <= tol, key


def flip_bytes(path: Path) -> None:
    """Invert 8 bytes in the middle of the file (tensor data: the safetensors header still parses)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


def latest_step(run: Path) -> int:
    """The step ``checkpoints/latest.json`` names, 0 if none: a save is complete only then (a kill between the
    folder's rename and the pointer leaves the previous checkpoint the latest: evoflow.train.checkpoint's design)."""
    try:
        return json.loads((run / "checkpoints" / "latest.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One folder for every run of this module, so that they share ``.evoflow-cache`` (tokenizer, token rows)."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def reference(root):
    """An uninterrupted 20-step run of the command (default mixture): its folder and what train printed."""
    out = root / "reference"
    return out, evoflow(["train", *RUN20, "--out", out]).stdout


@pytest.mark.parametrize("mixture", ["ar", DEFAULT_MIXTURE])
def test_thirty_steps_lower_the_validation_ar_bits_and_log_every_step(root, one_thread, mixture):
    cfg = TrainConfig(size="tiny", vocab=512, seq=32, batch=8, steps=30, eval_every=10, checkpoint_every=30,
                      eval_rows=16, mixture=mixture)
    data = load_data(cfg, root / ".evoflow-cache")
    rows = data.valid[: cfg.eval_rows]
    before = score_path(build_model(cfg, data.tokenizer.vocab_size), rows, "ar")  # the model at step 0
    out = root / f"learn-{mixture.split(':')[0]}-{len(mixture)}"
    summary = train(cfg, out, progress=False)

    lines = metrics(out)
    assert [m["step"] for m in lines] == list(range(1, 31))
    assert all(m.keys() >= REQUIRED and all(math.isfinite(m[k]) for k in REQUIRED) for m in lines)
    assert all(m["tokens_per_s"] > 0 for m in lines)
    evaluated = [m for m in lines if m.keys() >= VALIDATION]
    assert [m["step"] for m in evaluated] == [10, 20, 30]
    assert not any(VALIDATION & m.keys() for m in lines if m not in evaluated)
    last = evaluated[-1]
    assert last["val_tokens"] == before.tokens == 16 * 32
    assert summary == {"step": 30, **{k: last[k] for k in VALIDATION}}
    # the untrained model is close to uniform over the vocabulary, and 30 steps move it well below that
    assert abs(before.bits - math.log2(data.tokenizer.vocab_size)) < 0.25
    assert last["val_ar_bits"] < before.bits - (0.5 if mixture == "ar" else 0.02)
    for name in ("config.json", "tokenizer.json", "report.md", "loss.png"):
        assert (out / name).is_file(), name
    assert TrainConfig(**json.loads((out / "config.json").read_text())) == cfg
    assert checkpoint_steps(out) == [30]


def test_a_fresh_run_over_a_run_killed_before_its_first_checkpoint_starts_a_fresh_metrics_file(root, one_thread):
    out = root / "restarted"
    out.mkdir()
    stale = [{"step": s, "loss": 1.0, "bound_bits": 1.0, "tokens_per_s": 1.0} for s in range(1, 6)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in stale))  # no checkpoint: not a run
    train(TrainConfig(size="tiny", vocab=512, seq=32, batch=4, steps=3, eval_rows=2), out, progress=False)
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]


def test_resume_and_eval_refuse_text_that_changed_since_the_checkpoint(root, one_thread, capsys):
    """The checkpoint names its data (corpus and tokenizer sha256): a run is not continued, nor its validation
    split scored, on other text under the same file name."""
    from pydoc_data.topics import topics

    corpus, run = root / "corpus.txt", root / "own-data"
    text = "\n\n".join(topics[k] for k in sorted(topics)[:30])
    corpus.write_text(text)
    cfg = TrainConfig(size="tiny", vocab=512, seq=32, batch=4, steps=4, checkpoint_every=2, eval_rows=2,
                      data=str(corpus))
    train(cfg, run, progress=False)
    before = (run / "metrics.jsonl").read_text()
    corpus.write_text(text[: len(text) // 2] + text[len(text) // 2:].replace(" the ", " a "))
    for argv in (["eval", str(run)], ["train", "--resume", "--out", str(run), "--quiet"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err.splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and str(corpus) in err[0], err
    assert (run / "metrics.jsonl").read_text() == before
    assert load_run(run, data="pydoc").step == 4  # other text, given explicitly, is scored with the run's tokenizer


def test_a_run_killed_after_a_checkpoint_resumes_exactly(root, reference):
    ref, _ = reference
    out = root / "killed"
    with open(root / "killed.stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "evoflow.cli", "train", *RUN20, "--out", str(out)], cwd=ROOT,
                                env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        try:
            while latest_step(out) < 10:
                assert proc.poll() is None, (root / "killed.stderr").read_text()[-4000:]
                assert time.monotonic() < deadline, "no checkpoint of step 10 within 120 s"
                time.sleep(0.002)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    start = latest_step(out)
    assert start in (10, 15)  # 15 only if this process was starved for five steps
    assert len(metrics(out)) >= start and not (out / "report.md").exists()

    evoflow(["train", "--resume", "--out", out, "--quiet"])
    expected, got = metrics(ref), metrics(out)
    assert [m["step"] for m in got] == list(range(1, 21))  # the lines written after the checkpoint were dropped
    for a, b in zip(expected, got, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, a["step"]
        assert abs(a["bound_bits"] - b["bound_bits"]) <= 1e-6, a["step"]
        assert a.keys() == b.keys()
    assert got[-1]["val_ar_bits"] == expected[-1]["val_ar_bits"]
    assert len({m["loss"] for m in got[start:]}) == 20 - start  # distinct steps: the comparison is not vacuous
    final_ref, final = load_checkpoint(ref), load_checkpoint(out)
    assert final_ref.step == final.step == 20
    assert_same_parameters(final_ref.model, final.model, 1e-6)
    assert not all(torch.equal(final.model[k], load_checkpoint(out / "checkpoints" / "step-00000015").model[k])
                   for k in final.model)


def test_a_corrupted_latest_checkpoint_is_refused_and_resume_falls_back(root, reference, one_thread, capsys):
    ref, _ = reference
    run = root / "corrupted"
    shutil.copytree(ref, run)
    bad = run / "checkpoints" / "step-00000020" / "model.safetensors"
    flip_bytes(bad)

    with pytest.raises(CheckpointError, match=re.escape(str(bad))):  # that checkpoint, named: refused
        load_run(bad.parent)
    with pytest.warns(UserWarning, match=re.escape(str(bad))):  # the run: the corrupted file is skipped, named
        loaded = load_run(run)
    assert loaded.step == 15
    assert_same_parameters(loaded.model.state_dict(), load_checkpoint(run / "checkpoints" / "step-00000015").model, 0)
    with pytest.warns(UserWarning, match=re.escape(str(bad))):
        assert main(["eval", str(run), "--path", "ar"]) == 0
    assert f"{run} at step 15," in capsys.readouterr().out

    with pytest.warns(UserWarning, match=re.escape(str(bad))):  # resume: from step 15, the same run as before
        summary = train(TrainConfig(), run, resume=True, progress=False)
    assert summary["step"] == 20
    expected, got = metrics(ref), metrics(run)
    assert [m["step"] for m in got] == list(range(1, 21))
    for a, b in zip(expected, got, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, a["step"]
    assert_same_parameters(load_checkpoint(ref).model, load_checkpoint(run).model, 1e-6)

    for step in checkpoint_steps(run):  # nothing usable is left: eval and resume stop, naming the run
        flip_bytes(run / "checkpoints" / f"step-{step:08d}" / "model.safetensors")
    for argv in (["eval", str(run)], ["train", "--resume", "--out", str(run)]):
        capsys.readouterr()
        with pytest.warns(UserWarning, match="model.safetensors"), pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"no checkpoint in {run}" in err[0], err


def test_eval_reproduces_the_figures_of_training(reference, one_thread, capsys):
    ref, printed = reference
    last = metrics(ref)[-1]
    assert last["step"] == 20 and last.keys() >= VALIDATION
    # the default paths (ar, sync with the run's 16 steps) in a fresh process: the very same floats
    result = json.loads(evoflow(["eval", ref, "--json"]).stdout)
    assert result["step"] == 20 and result["tokens"] == last["val_tokens"]
    ar, sync = result["scores"]
    assert (ar["label"], ar["exact"], sync["label"], sync["exact"]) == ("ar", True, "sync:16", False)
    assert ar["bits"] == last["val_ar_bits"]
    assert (sync["bits"], sync["stderr"]) == (last["val_sync_bits"], last["val_sync_stderr"])

    # the summary train printed, and the other paths, labelled as bounds
    ar_bits, sync_bits, sync_se = re.search(r"validation (\S+) bits/token on the AR path \(exact\), (\S+) \+- (\S+) on "
                                            r"the synchronous path with 16 steps", printed).groups()
    assert (ar_bits, sync_bits, sync_se) == tuple(f"{last[k]:.4f}" for k in ("val_ar_bits", "val_sync_bits",
                                                                             "val_sync_stderr"))
    assert main(["eval", str(ref), "--path", "ar", "--path", "sync", "--path", "block:4", "--path", "rolling:4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{ref} at step 20, {last['val_tokens']} tokens of its validation split:"
    assert out[1] == f"  ar: {ar_bits} bits/token (exact)"
    assert out[2] == f"  sync:16: {sync_bits} +- {sync_se} bits/token (bound)"
    # block:4 on 32 tokens: 8 blocks, 2 steps each (16 by default); rolling:4: one step per knot, 32 + 3
    for line, label in zip(out[3:], ["block:4:16", "rolling:4:35"], strict=True):
        bits, se = re.fullmatch(rf"  {label}: (\S+) \+- (\S+) bits/token \(bound\)", line).groups()
        assert math.isfinite(float(bits)) and float(se) > 0


@pytest.mark.dist
def test_two_processes_train_as_one(root, one_thread):
    """``torchrun`` with 2 gloo processes (FSDP2) against one process (here, on one thread), the same global batch
    of 4 and the default mixture (ranks often hold no row of some component): per-step losses and the final
    parameters within 1e-5."""
    train(TrainConfig(size="tiny", vocab=512, seq=32, batch=4, steps=8), root / "one", progress=False)
    evoflow(["train", *SMALL, "--steps", "8", "--quiet", "--out", root / "two"],
            launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
    one, two = metrics(root / "one"), metrics(root / "two")
    assert [m["step"] for m in two] == list(range(1, 9))  # one line per step: rank 0 writes alone
    for a, b in zip(one, two, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, a["step"]
    assert abs(one[-1]["val_ar_bits"] - two[-1]["val_ar_bits"]) <= 1e-5
    ckpt_one, ckpt_two = load_checkpoint(root / "one"), load_checkpoint(root / "two")
    assert (ckpt_one.meta["world"], ckpt_two.meta["world"]) == (1, 2)
    assert_same_parameters(ckpt_one.model, ckpt_two.model, 1e-5)
    vocab = TextTokenizer.from_json(ckpt_one.meta["tokenizer"]).vocab_size
    initial = build_model(TrainConfig(**ckpt_one.meta["config"]), vocab).state_dict()
    assert initial.keys() == ckpt_one.model.keys()
    assert max(float((initial[k] - ckpt_one.model[k]).abs().max()) for k in initial) > 1e-4  # training moved them


class _Calls:
    """A model that counts its forward passes (each one a pass through every FSDP-sharded block)."""

    def __init__(self, model):
        self.model, self.schedule, self.embeddings, self.calls = model, model.schedule, model.embeddings, 0

    def __call__(self, z, tau):
        self.calls += 1
        return self.model(z, tau)

    def two_stream(self, *args):
        self.calls += 1
        return self.model.two_stream(*args)


def test_every_rank_makes_the_same_model_calls_under_the_default_mixture():
    """A rank with no row of some component still makes its model call (an empty batch): otherwise the ranks'
    FSDP all-gathers stop matching and torchrun hangs (seen at step 4 of a batch of 4)."""
    torch.manual_seed(0)
    model = EvoTransformer(get_config("tiny"))
    objective, world = PathMixture(DEFAULT_MIXTURE), 2
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for step in range(8):
            state, counts = generator.get_state(), []
            for rank in range(world):
                generator.set_state(state)  # every rank draws the same randomness for the global batch
                calls = _Calls(model)
                objective(calls, x[rank::world], generator, rank, world)
                counts.append(calls.calls)
            assert len(set(counts)) == 1, (step, counts)
