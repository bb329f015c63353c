"""``evoflow sample`` on a run trained for two steps: text and the cost line; bad input is one line, exit 2 (C14)."""

import pytest

from evoflow.cli import main
from evoflow.cli_sample import parse_controller
from evoflow.paths import Rolling, Staircase, Synchronous
from evoflow.train.config import TrainConfig
from evoflow.train.loop import train
from tests.test_cli_train import refused


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "run"
    train(TrainConfig(size="tiny", vocab=512, seq=32, batch=4, steps=2, eval_rows=2), out, progress=False)
    return out


@pytest.mark.parametrize("spec, calls", [("ar", 12), ("sync:3", 3), ("block:4", 12), ("rolling:2", 13)])
def test_sample_prints_the_text_and_the_calls_of_the_controller(run, capsys, spec, calls):
    assert main(["sample", str(run), "--controller", spec, "--length", "12", "--prompt", "The", "--seed", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("The") and out[-1].startswith(f"{spec} at step 2: {calls} calls for 1 x 12 tokens")


def test_evo_sampling_commits_at_least_one_token_per_call(run, capsys):
    assert main(["sample", str(run), "--length", "10", "--temperature", "0"]) == 0
    calls = int(capsys.readouterr().out.splitlines()[-1].split(": ")[1].split()[0])
    assert 1 <= calls <= 10


def test_parse_controller_builds_the_paths_and_steps():
    path, steps = parse_controller("block:4", 10)
    assert isinstance(path, Staircase) and path.block == 4 and steps == 12  # 3 blocks x 4
    path, steps = parse_controller("rolling:1.5:20", 10)
    assert isinstance(path, Rolling) and path.window == 1.5 and steps == 20
    assert isinstance(parse_controller("sync", 7)[0], Synchronous) and parse_controller("sync", 7)[1] == 7


@pytest.mark.parametrize("argv, words", [
    (["--controller", "diagonal"], "--controller"), (["--controller", "sync:0"], "--controller"),
    (["--length", "0"], "--length"), (["--temperature", "-1"], "temperature"), (["--top-p", "2"], "top_p"),
])
def test_bad_input_is_one_line_and_exit_2(run, capfd, argv, words):
    line = refused(["sample", run, *argv], capfd, command="sample")
    assert words in line


def test_a_folder_without_a_checkpoint_is_refused(tmp_path, capfd):
    assert "checkpoint" in refused(["sample", tmp_path], capfd, command="sample")
