"""``evoflow train`` / ``eval`` / ``demo`` on the command line: a bad invocation is one line on stderr naming the
argument, exit status 2, before any training step; the help lists the promised flags."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from evoflow.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--size", "tiny", "--vocab", "512", "--seq", "32", "--batch", "4", "--steps", "2", "--quiet"]


def refused(argv, capfd, command="train") -> str:
    """Run ``evoflow argv`` in this process; assert exit status 2, nothing on stdout, no warning and exactly one
    line on stderr, ``evoflow <command>: error: ...``; return that line."""
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as exit_:
        warnings.simplefilter("always")
        main([str(a) for a in argv])
    out, err = capfd.readouterr()
    assert exit_.value.code == 2, err
    assert out == "" and [str(w.message) for w in caught] == []
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith(f"evoflow {command}: error: "), lines[0]
    return lines[0]


def no_training(tmp_path: Path) -> None:
    """Nothing was trained: no metrics, checkpoints or report anywhere under the test's folder."""
    for name in ("metrics.jsonl", "checkpoints", "report.md", "config.json"):
        assert not list(tmp_path.rglob(name)), name


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_DATA = {  # name -> (file content or None for no file, words the message must hold besides the file name)
    "missing": (None, ["no such file"]),
    "empty": (b"", ["empty"]),
    "binary": (b"some text\x00\x01\x02 and more", ["binary"]),
    "undecodable": (b"caf\xe9 au lait \xff\xfe", ["UTF-8"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_files_are_refused_naming_the_file(tmp_path, capfd, case):
    content, words = BAD_DATA[case]
    data = tmp_path / f"{case}.txt"
    if content is not None:
        write(data, content)
    line = refused(["train", *SMALL, "--data", data, "--out", tmp_path / "run"], capfd)
    assert data.name in line and all(w in line for w in words), line
    no_training(tmp_path)


def _toml(tmp_path: Path, text: str) -> Path:
    return write(tmp_path / "run.toml", text.encode())


@pytest.mark.parametrize(("case", "flags", "words"), [
    ("unknown size", ["--size", "huge"], ["size", "'huge'", "tiny"]),
    ("bad mixture", ["--mixture", "ar:0.5,zigzag:0.5"], ["mixture", "zigzag"]),
    ("bad mixture weight", ["--mixture", "ar:heavy"], ["mixture", "ar:heavy"]),
    ("zero steps", ["--steps", "0"], ["steps", ">= 1"]),
    ("batch below the world", ["--batch", "0"], ["batch"]),
    ("unknown config field", ["--config", "{tmp}/run.toml"], ["config", "learning_rat", "run.toml"]),
    ("ill-typed config field", ["--config", "{tmp}/typed.toml"], ["lr", "fast"]),
])
def test_bad_settings_are_refused_naming_the_argument(tmp_path, capfd, case, flags, words):
    _toml(tmp_path, 'size = "tiny"\nlearning_rat = 0.1\n')
    write(tmp_path / "typed.toml", b'lr = "fast"\n')  # not a flag given here
    flags = [f.format(tmp=tmp_path) for f in flags]
    line = refused(["train", *SMALL, *flags, "--out", tmp_path / "run"], capfd)
    assert all(w in line for w in words), line
    no_training(tmp_path)


def test_resume_needs_a_run_with_a_checkpoint(tmp_path, capfd):
    line = refused(["train", *SMALL, "--resume"], capfd)  # no --out
    assert "--resume" in line and "--out" in line, line
    empty = tmp_path / "empty-run"
    empty.mkdir()
    line = refused(["train", *SMALL, "--resume", "--out", empty], capfd)
    assert f"no checkpoint in {empty}" in line, line
    line = refused(["train", *SMALL, "--resume", "--out", tmp_path / "absent"], capfd)
    assert "--out" in line and "absent" in line, line
    assert not (tmp_path / "absent").exists()
    no_training(tmp_path)


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, capfd):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-00000002").mkdir(parents=True)
    line = refused(["train", *SMALL, "--out", run], capfd)
    assert "already holds a run" in line and "resume" in line, line
    assert not (run / "metrics.jsonl").exists() and not (run / "config.json").exists()


def test_an_unwritable_out_is_refused(tmp_path, capfd):
    regular = write(tmp_path / "a-file", b"not a folder")
    line = refused(["train", *SMALL, "--out", regular / "run"], capfd)
    assert "--out" in line and "a-file" in line, line
    assert regular.read_bytes() == b"not a folder"
    no_training(tmp_path)


def test_eval_refuses_a_folder_that_is_not_a_run(tmp_path, capfd):
    (tmp_path / "notes.txt").write_text("not a run")
    line = refused(["eval", tmp_path], capfd, command="eval")
    assert f"no checkpoint in {tmp_path}" in line, line
    line = refused(["eval", tmp_path / "absent"], capfd, command="eval")
    assert "absent" in line, line


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    """The same contract outside pytest's capture: a fresh ``python -m evoflow.cli`` process."""
    proc = subprocess.run([sys.executable, "-m", "evoflow.cli", "train", *SMALL, "--data", str(tmp_path / "none.txt"),
                           "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("evoflow train: error: "), proc.stderr
    assert "none.txt" in proc.stderr
    no_training(tmp_path)


def _help(argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_train_help_lists_the_promised_flags(capsys):
    text = _help(["train", "--help"], capsys)
    options = {word.rstrip(",") for line in text.splitlines() for word in line.split() if word.startswith("--")}
    for flag in ("--size", "--data", "--steps", "--batch", "--seq", "--out", "--resume", "--seed", "--config"):
        assert flag in options, flag
    assert "tiny" in text  # the sizes are listed


def test_eval_and_demo_help(capsys):
    assert "--path" in _help(["eval", "--help"], capsys)
    text = _help(["demo", "--help"], capsys)
    assert "--out" in text and "--steps" in text
