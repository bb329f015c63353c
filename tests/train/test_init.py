"""Runs that start from a Hugging Face checkpoint: ``evoflow train --init HF_DIR`` (THEORY section 8, C9, C13).

A tiny Llama is first trained as a causal LM with transformers on the docstrings corpus (so that it has AR
knowledge to keep), saved with its tokenizer, then adapted with the path-mixture objective. The claims: the
imported model scores the checkpoint's own AR likelihood before adaptation; adaptation improves the
synchronous-path bound by a clear margin while the AR-path likelihood stays within 5% of the import's.
"""

import json
import pathlib

import pytest
import torch

import evoflow as ef
from bench.bench_hf import pretrained_llama
from evoflow.nn import Frontier, from_hf
from evoflow.train.config import TrainConfig
from evoflow.train.data import load_corpus, load_tokenizer, prepare
from evoflow.train.evaluate import score_path
from evoflow.train.loop import Run, reach
from evoflow.train.session import load_model

transformers = pytest.importorskip("transformers")
SEQ = 32


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(directory, validation rows, model): a causal LM trained 60 steps on docstrings, with its tokenizer.json."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("llama")
    model, data = pretrained_llama(root / "hf", root / "cache", seq=SEQ, vocab=320, width=48, ffn=128, steps=60)
    return root / "hf", data.valid[:32], model


def test_the_config_is_derived_once_and_saved(pretrained, tmp_path):
    folder, _, _ = pretrained
    cfg = TrainConfig(init=str(folder), data="docstrings", seq=SEQ)
    assert cfg.model["shift"] and cfg.model["embedding"] == "learned" and cfg.tokenizer == str(folder)
    assert cfg.vocab == cfg.model["vocab"] == 320 and cfg.model["latent_scale"] > 1
    again = TrainConfig(**json.loads(json.dumps(cfg.__dict__)))  # as config.json reads back: nothing re-derived
    assert again.model == cfg.model
    with pytest.raises(ValueError, match=r"no config\.json"):
        TrainConfig(init=str(tmp_path), data="docstrings")
    with pytest.raises(ValueError, match="anneal must be"):
        TrainConfig(anneal=-1)


def test_reach_anneals_from_causal_to_the_frontier():
    cfg = TrainConfig(seq=64, anneal=8, steps=10)
    assert [reach(cfg, s) for s in (1, 4, 7, 8, 9)] == [8, 32, 56, None, None]
    assert reach(TrainConfig(seq=64), 1) is None


def test_the_import_scores_the_checkpoints_own_likelihood(pretrained):
    folder, rows, reference = pretrained
    model = from_hf(folder)
    with torch.no_grad():
        logp = torch.log_softmax(reference(rows).logits.double(), -1)[:, :-1].gather(-1, rows[:, 1:, None])
    ours = ef.ar_conditionals(model, rows)[:, 1:]
    assert torch.allclose(ours, logp[..., 0], rtol=1e-4, atol=1e-5)


def test_adaptation_improves_the_synchronous_bound_and_keeps_the_ar_likelihood(pretrained, tmp_path):
    folder, rows, _ = pretrained
    before = {k: score_path(from_hf(folder), rows, k, 16, t_min=0.2).bits for k in ("ar", "sync:16")}
    cfg = TrainConfig(init=str(folder), data="docstrings", steps=80, seq=SEQ, batch=16, anneal=40, eval_every=80,
                      eval_rows=32, checkpoint_every=80, lr=1e-3, min_lr=1e-4, warmup=10)
    run = Run(cfg, pathlib.Path(tmp_path / "run"), False, False, lambda *a: None, 0, 1, None)
    assert torch.equal(run.valid.cpu(), rows)  # the same held-out rows are scored before and after
    summary = run.fit()
    assert summary["val_sync_bits"] < before["sync:16"] - 2.0, (before, summary)
    assert summary["val_ar_bits"] < before["ar"] * 1.05, (before, summary)
    model, saved, _, _ = load_model(tmp_path / "run")  # rebuilt from config.json alone
    assert saved.init == str(folder) and model.config.shift and model.attention == Frontier()


def test_evoflow_eval_scores_an_imported_checkpoint_before_adaptation(pretrained, capsys):
    from evoflow.cli import main

    folder, _, _ = pretrained
    assert main(["eval", str(folder), "--data", "docstrings", "--path", "ar", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    cfg = TrainConfig(init=str(folder), data="docstrings")
    rows = prepare(load_corpus("docstrings"), load_tokenizer(folder, max_vocab=cfg.vocab), cfg.seq, 0.05, 0).valid
    want = score_path(from_hf(folder), rows[: cfg.eval_rows], "ar").bits  # the rows train --init validates on
    assert printed["scores"][0]["bits"] == pytest.approx(want, rel=1e-9) and printed["step"] == 0
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(folder)])
    assert exit_.value.code == 2 and "give the text to score (--data)" in capsys.readouterr().err


def test_the_command_line_starts_a_run_from_a_checkpoint_directory(pretrained, tmp_path, capsys):
    from evoflow.cli import main

    folder, _, _ = pretrained
    out = tmp_path / "cli-run"
    assert main(["train", "--init", str(folder), "--data", "docstrings", "--steps", "2", "--seq", str(SEQ),
                 "--batch", "4", "--eval-every", "2", "--checkpoint-every", "2", "--anneal", "2", "--quiet",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["init"] == str(folder) and saved["anneal"] == 2 and saved["model"]["shift"] is True
    assert "bits/token on the AR path" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--init", str(tmp_path / "absent"), "--data", "docstrings", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "not a directory" in capsys.readouterr().err
