"""The lm-evaluation-harness adapter (model ``evoflow``): parity with lm-eval's ``hf`` model on an imported Llama,
exact AR log-likelihoods and rolling windows on a run directory, path bounds, ``generate_until``, bad arguments.

Everything runs offline on the local tasks of tests/data/lm_eval and the tiny checkpoints of conftest.py.
"""

import lm_eval
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager

import evoflow.integrations.lm_eval as adapter
from evoflow import ar_conditionals, generate
from evoflow.integrations.lm_eval import EvoflowLM
from evoflow.nn import CachedDenoiser
from evoflow.paths import Staircase, Synchronous
from tests.integrations.conftest import TASKS

ALL_TASKS = ["evoflow_tiny_mc", "evoflow_tiny_rolling", "evoflow_tiny_gen"]


@pytest.fixture(scope="module")
def tasks():
    return TaskManager(include_path=str(TASKS), include_defaults=False)


@pytest.fixture(scope="module")
def run_lm(run_dir):
    return EvoflowLM(pretrained=str(run_dir), device="cpu", batch_size=5)


@pytest.fixture(scope="module")
def hf_lm(hf_dir):
    return EvoflowLM(pretrained=str(hf_dir), device="cpu")


def evaluate(model: str, model_args: str, tasks, names=ALL_TASKS, batch_size=None) -> dict:
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=names, task_manager=tasks,
                                   log_samples=True, verbosity="ERROR", device="cpu", batch_size=batch_size)


def responses(result: dict, task: str) -> list:
    """Per document, the list of its requests' answers (an MC document: one (loglik, greedy) per choice)."""
    return [[r[0] for r in s["resps"]] for s in sorted(result["samples"][task], key=lambda s: s["doc_id"])]


def rolling(lm: EvoflowLM, text: str) -> float:
    return lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)[0]


def until_request(lm: EvoflowLM, context: str, **gen_kwargs) -> str:
    return lm.generate_until([Instance("generate_until", {}, (context, gen_kwargs), 0)], disable_tqdm=True)[0]


def ar_sum(lm: EvoflowLM, ids: list[int], scored_from: int) -> float:
    """``sum_{i >= scored_from} log p(ids_i | ids_<i)`` by evoflow.ar_conditionals, the exact AR path (C13)."""
    return float(ar_conditionals(lm.model, torch.tensor([ids]))[0, scored_from:].sum())


def greedy_ids(lm: EvoflowLM, prompt: list[int], n: int, controller=None, steps=None) -> list[int]:
    """``n`` tokens after ``prompt`` by argmax decoding with evoflow.generate (AR unless told)."""
    out = generate(CachedDenoiser(lm.model), len(prompt) + n, controller or Staircase(1), steps=steps or n,
                   prompt=prompt, temperature=0)
    return out.tokens[0, len(prompt):].tolist()


def test_the_model_name_evoflow_is_registered_by_importing_the_adapter():
    assert get_model("evoflow") is EvoflowLM is adapter.EvoflowLM


def test_simple_evaluate_gives_the_hf_models_accuracy_loglikelihoods_and_generations(hf_dir, hf_lm, tasks):
    """On the imported tiny Llama, with max_length 16 so that some contexts are cut and texts are scored in several
    windows: the same accuracies, per-choice log-likelihoods and greedy flags (1e-4), rolling log-likelihoods and
    generated texts as lm-eval's own ``hf`` model on the same directory."""
    ours = evaluate("evoflow", f"pretrained={hf_dir},dtype=float32,max_length=16", tasks, batch_size=4)
    theirs = evaluate("hf", f"pretrained={hf_dir},dtype=float32,max_length=16", tasks, batch_size=1)
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["evoflow_tiny_mc"][metric] == theirs["results"]["evoflow_tiny_mc"][metric]
    for task in ("evoflow_tiny_mc", "evoflow_tiny_rolling"):
        mine, hf = responses(ours, task), responses(theirs, task)
        assert len(mine) == len(hf) == len(ours["samples"][task]) > 0
        for a, b in zip(mine, hf, strict=True):
            a, b = (a, b) if task == "evoflow_tiny_mc" else ([(a[0], None)], [(b[0], None)])
            assert [ll for ll, _ in a] == pytest.approx([ll for ll, _ in b], abs=1e-4)
            assert [g for _, g in a] == [g for _, g in b]
    assert responses(ours, "evoflow_tiny_gen") == responses(theirs, "evoflow_tiny_gen")
    longest = max((s["doc"]["text"] for s in ours["samples"]["evoflow_tiny_rolling"]), key=len)
    assert len(hf_lm.tok_encode(longest)) > 2 * 16  # several windows
    pairs = [hf_lm._encode_pair(*a) for s in ours["samples"]["evoflow_tiny_mc"] for a in s["arguments"] if a[0]]
    assert any(len(ctx) + len(cont) > 16 + 1 for ctx, cont in pairs)  # some requests lost tokens on the left


def test_loglikelihood_on_a_run_directory_is_the_exact_ar_likelihood_of_the_encoded_pair(run_dir, run_lm, tasks):
    """Through simple_evaluate, in batches of 5 (right-padded, longest first), every request within max_length:
    each choice's log-likelihood is evoflow.ar_conditionals summed over the continuation of lm-eval's own
    encoding of the pair (EOS for the empty context), to 1e-5."""
    result = evaluate("evoflow", f"pretrained={run_dir},batch_size=5,max_length=64", tasks, names=["evoflow_tiny_mc"])
    checked = 0
    for sample in result["samples"]["evoflow_tiny_mc"]:
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"], strict=True):
            ctx, cont = (run_lm._encode_pair(context, continuation) if context else
                         ([run_lm.tokens.eot_id], run_lm.tok_encode(continuation)))
            assert resp[0][0] == pytest.approx(ar_sum(run_lm, ctx + cont, len(ctx)), abs=1e-5)
            checked += 1
    assert checked == 36
    assert any(s["arguments"][0][0] == "" for s in result["samples"]["evoflow_tiny_mc"])


def test_a_request_longer_than_max_length_keeps_its_last_tokens(run_dir):
    """With max_length 8, a short continuation after a long context is scored on the last 8 tokens, the rest of
    them context, as lm-eval's hf model truncates (an unshifted model predicts position 0 from nothing)."""
    lm = EvoflowLM(pretrained=str(run_dir), device="cpu", max_length=8)
    ctx, cont = lm.tok_encode("The moon was bright and the house was big and"), lm.tok_encode(" the sun")
    assert len(ctx) > 8 > len(cont)
    (ll, _), = lm._loglikelihood_tokens([(None, ctx, cont)])
    assert ll == pytest.approx(ar_sum(lm, (ctx + cont)[-8:], 8 - len(cont)), abs=1e-6)
    assert ll != pytest.approx(ar_sum(lm, ctx + cont, len(ctx)), abs=1e-3)


def test_the_greedy_flag_is_true_exactly_for_the_argmax_continuation(run_lm):
    ctx = run_lm.tok_encode("The cat sat on the")
    best = greedy_ids(run_lm, ctx, 4)
    other = [*best[:3], (best[3] + 1) % run_lm.model.config.vocab]
    (ll_best, greedy_best), (ll_other, greedy_other) = run_lm._loglikelihood_tokens([(None, ctx, best),
                                                                                    (None, ctx, other)])
    assert (greedy_best, greedy_other) == (True, False)
    assert ll_best > ll_other


def test_loglikelihood_rolling_is_the_sum_of_the_per_token_ar_loglikelihoods(run_dir):
    """A text that fits in max_length: the rolling log-likelihood is sum_i log p(x_i | EOS, x_<i) (C13)."""
    lm = EvoflowLM(pretrained=str(run_dir), device="cpu", max_length=64)
    text = "The moon was bright and the house was big. The cat sat on the mat."
    ids = lm.tok_encode(text)
    assert 10 < len(ids) < 64
    assert rolling(lm, text) == pytest.approx(ar_sum(lm, [lm.prefix_token_id, *ids], 1), abs=1e-6)


def test_loglikelihood_rolling_scores_each_token_once_in_lm_evals_windows(run_dir):
    """Ten tokens in windows of 5 positions, as lm-eval's documented example cuts them (max context 4): [P 0 1 2 3]
    scores 0-3, [3 4 5 6 7] scores 4-7, [5 6 7 8 9] scores 8-9 (an unshifted model predicts every position)."""
    lm = EvoflowLM(pretrained=str(run_dir), device="cpu", max_length=5)
    sentence = "The moon was bright and the house was big and the sun was hot."
    text = next(sentence[:k] for k in range(len(sentence)) if len(lm.tok_encode(sentence[:k])) == 10)
    x, p = lm.tok_encode(text), lm.prefix_token_id
    expected = ar_sum(lm, [p, *x[:4]], 1) + ar_sum(lm, x[3:8], 1) + ar_sum(lm, x[5:10], 3)
    assert rolling(lm, text) == pytest.approx(expected, abs=1e-6)
    assert rolling(lm, text) != pytest.approx(ar_sum(lm, [p, *x], 1), abs=1e-3)  # the windows cut the context


def test_a_bound_along_one_token_blocks_at_t_min_0_is_the_exact_ar_loglikelihood(run_dir, run_lm):
    """The mixture-kernel NELBO along Staircase(1) down to t = 0 is -log p^AR with zero variance (C13), so
    path=block:1 reproduces the exact AR path; path=sync:4 is a Monte Carlo bound fixed by its seed."""
    ctx = run_lm.tok_encode("The cat sat on the")
    requests = [(None, ctx, run_lm.tok_encode(" mat and the dog")), (None, [run_lm.prefix_token_id],
                                                                     run_lm.tok_encode("Red blue"))]
    exact = [ll for ll, _ in run_lm._loglikelihood_tokens(requests)]
    block = EvoflowLM(pretrained=str(run_dir), device="cpu", path="block:1", t_min=0, mc_samples=3, batch_size=2)
    assert [ll for ll, _ in block._loglikelihood_tokens(requests)] == pytest.approx(exact, abs=1e-4)

    def sync(seed):
        lm = EvoflowLM(pretrained=str(run_dir), device="cpu", path="sync:4", mc_samples=4, seed=seed)
        return [ll for ll, _ in lm._loglikelihood_tokens(requests)]

    first = sync(0)
    assert sync(0) == first
    assert all(abs(a - b) > 1e-6 for a, b in zip(sync(1), first, strict=True))


def test_generate_until_cuts_at_the_first_stop_string_and_stops_decoding(hf_lm, monkeypatch):
    """On the imported Llama (whose greedy text varies, unlike the briefly trained run's), the stop string is a word
    the AR decoding produces within its first chunk of 16 tokens: the text is the 40-token greedy continuation cut
    before it, and decoding stopped after the first chunk (one call for 16 tokens, not three for 40)."""
    context = "The cat sat on the"
    full = greedy_ids(hf_lm, hf_lm.tok_encode(context), 40)
    words = [hf_lm.tok_decode([t]) for t in full[:16]]
    k = next(k for k in range(1, 16) if len(w := words[k].strip()) > 1 and w.isascii() and w.isalpha()
             and words[k] not in hf_lm.tok_decode(full[:k]))
    lengths = []
    monkeypatch.setattr(adapter, "generate", lambda *a, **kw: lengths.append(a[1]) or generate(*a, **kw))
    text = until_request(hf_lm, context, until=[words[k]], max_gen_toks=40, do_sample=False)
    assert text == hf_lm.tok_decode(full).split(words[k])[0] == hf_lm.tok_decode(full[:k])
    assert lengths == [len(hf_lm.tok_encode(context)) + 16]


def test_generate_until_honours_max_gen_toks(run_lm):
    context = "The dog ran to the"
    full = greedy_ids(run_lm, run_lm.tok_encode(context), 20)
    assert run_lm.tokens.eot_id not in full[:5]
    assert until_request(run_lm, context, until=[], max_gen_toks=5) == run_lm.tok_decode(full[:5])


def test_generate_until_decodes_along_the_named_controller(hf_dir, hf_lm):
    """controller=sync:3 gives 3-step synchronous argmax decoding of the 6 new tokens (not AR decoding's)."""
    lm = EvoflowLM(pretrained=str(hf_dir), device="cpu", controller="sync:3")
    context, prompt = "The sun is", lm.tok_encode("The sun is")
    sync = hf_lm.tok_decode(greedy_ids(lm, prompt, 6, Synchronous(), 3))
    assert sync != hf_lm.tok_decode(greedy_ids(lm, prompt, 6))
    assert until_request(lm, context, until=["\n\n"], max_gen_toks=6) == sync.split("\n\n")[0]


def test_generate_until_samples_with_the_requested_temperature_from_the_seed(hf_dir, hf_lm):
    """do_sample with temperature 1: the tokens evoflow.generate draws at temperature 1 with a generator seeded by
    the model argument seed (here 3), not the greedy ones."""
    lm = EvoflowLM(pretrained=str(hf_dir), device="cpu", seed=3)
    context, prompt = "The moon was", lm.tok_encode("The moon was")
    out = generate(CachedDenoiser(lm.model), len(prompt) + 8, Staircase(1), steps=8, prompt=prompt, temperature=1.0,
                   generator=torch.Generator().manual_seed(3))
    drawn = out.tokens[0, len(prompt):].tolist()
    drawn = drawn[: drawn.index(lm.eot_token_id)] if lm.eot_token_id in drawn else drawn
    assert drawn != greedy_ids(lm, prompt, len(drawn))
    text = until_request(lm, context, until=[], max_gen_toks=8, do_sample=True, temperature=1.0)
    assert text == hf_lm.tok_decode(drawn)


@pytest.mark.parametrize(("args", "named"), [
    ({}, "pretrained"),
    ({"pretrained": "/nonexistent/evoflow-run"}, "pretrained"),
    ({"pretrained": "EMPTY"}, "pretrained"),
    ({"pretrained": "RUN", "dtype": "float8"}, "dtype"),
    ({"pretrained": "RUN", "device": "warp:9"}, "device"),
    ({"pretrained": "RUN", "batch_size": 0}, "batch_size"),
    ({"pretrained": "RUN", "batch_size": "auto"}, "batch_size"),
    ({"pretrained": "RUN", "controller": "zigzag"}, "controller"),
    ({"pretrained": "RUN", "controller": "sync:x"}, "controller"),
    ({"pretrained": "RUN", "path": "diagonal"}, "path"),
    ({"pretrained": "RUN", "mc_samples": 0}, "mc_samples"),
    ({"pretrained": "RUN", "max_length": 1}, "max_length"),
    ({"pretrained": "RUN", "t_min": 1.5}, "t_min"),
    ({"pretrained": "RUN", "temperature": 0.7}, "temperature"),
])
def test_bad_model_arguments_raise_a_value_error_naming_the_argument(args, named, run_dir, tmp_path):
    places = {"RUN": str(run_dir), "EMPTY": str(tmp_path)}
    args = {k: places.get(v, v) if isinstance(v, str) else v for k, v in args.items()}
    with pytest.raises(ValueError, match=named):
        EvoflowLM(**{"device": "cpu", **args})
