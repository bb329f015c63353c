"""lm-evaluation-harness adapter: evoflow models as lm-eval model ``evoflow`` (THEORY C13, C8, C14).

    python -m evoflow.integrations.lm_eval --model evoflow --model_args pretrained=runs/demo --tasks hellaswag
    python -m evoflow.integrations.lm_eval --model evoflow \\
        --model_args pretrained=hf/Llama-3.2-1B,dtype=bfloat16,batch_size=8 --tasks arc_easy
    lm_eval.simple_evaluate(model="evoflow", model_args="pretrained=DIR,path=sync:16,mc_samples=128", ...)

lm-eval 0.4.13 finds models by name only in its own registry (no entry points), so ``evoflow`` exists once
this module is imported: run lm-eval through ``python -m evoflow.integrations.lm_eval`` (its command line,
with the adapter registered), or import the module before calling ``lm_eval.simple_evaluate``.

Model arguments (``--model_args`` or a dict):

- ``pretrained=DIR`` (required): an ``evoflow train`` run directory or a Hugging Face model directory
  (imported by :func:`evoflow.nn.from_hf` and tokenized by ``AutoTokenizer``, as lm-eval's ``hf`` model does).
- ``dtype`` (float32), ``device`` (cuda when available), ``batch_size`` (1): sequences per model call (an integer:
  ``auto`` is refused; ``max_batch_size``, which lm-eval passes along with it, is ignored).
- ``max_length``: the context in tokens (default: the run's sequence length, or what ``hf`` resolves from the
  checkpoint's config); longer inputs keep their last tokens, as ``hf`` truncates.
- ``path`` (ar): how ``loglikelihood`` scores a continuation. ``ar`` is the exact AR-path log-likelihood
  ``sum_i log p(x_i | x_<i)`` (C13) in one forward per batch (the two-stream frontier pattern), with the
  greedy flag. ``sync[:K]``, ``block:B[:K]``, ``rolling:W[:K]`` give the negative mixture-kernel NELBO
  along that path instead (C8), the context held clean: a lower bound on the log-likelihood of decoding
  along that path, a Monte Carlo mean over ``mc_samples`` (128, LLaDA's count) trajectories seeded by
  ``seed``, decoded at ``t_min`` (the run's trained ``t_min``; 0 for an imported checkpoint) by the
  training objective's closed-form decoder (``t_min`` is a model argument too); its greedy flag is always False.
- ``controller`` (ar): how ``generate_until`` decodes, a :func:`evoflow.cli_sample.parse_controller` spec
  (``evo``, ``ar``, ``sync[:K]``, ``block:B[:K]``, ``rolling:W[:K]``), through :func:`evoflow.generate`
  with the KV cache; greedy unless a request sets ``do_sample`` (then ``temperature``, ``top_p``), from one
  generator per call seeded by ``seed``; other generation kwargs are ignored with a warning.

``loglikelihood_rolling`` scores a text in the windows lm-eval's utilities cut (each token once, after the
prefix token, every window at most ``max_length`` model positions) and sums them. ``generate_until`` honours
``max_gen_toks`` (at most that many new tokens) and ``until`` (text cut before the first stop string; the
EOS token ends a generation); ``ar`` decodes in chunks and stops once every sequence of a batch has stopped.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from evoflow.arguments import as_float, as_int
from evoflow.cli_sample import parse_controller
from evoflow.decoding import generate
from evoflow.elbo import nelbo
from evoflow.integrations.loading import load_pretrained
from evoflow.kernels import MixtureKernel
from evoflow.nn import CachedDenoiser, Frontier
from evoflow.paths import Staircase
from evoflow.train.evaluate import GaussianDecoded, parse_path

__all__ = ["EvoflowLM"]

log = logging.getLogger(__name__)
GENERATION_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p"}


def _count(value, name: str, minimum: int) -> int:
    """``value`` (an int, or its decimal string) as an int >= ``minimum``; a ``ValueError`` naming ``name``."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    try:
        return as_int(value, name, minimum=minimum)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _real(value, name: str) -> float:
    """``value`` (a real, or its string) as a float in [0, 1); a ``ValueError`` naming ``name``."""
    try:
        return as_float(float(value) if isinstance(value, str) else value, name, low=0.0, high=1.0, high_open=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc) if isinstance(exc, ValueError) else f"{name} must be a real number") from None


def _spec(value, name: str, check) -> str:
    """``value`` as a path or controller spec that ``check`` accepts; its ``ValueError`` names ``name``."""
    spec = str(value)
    try:
        check(spec)
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("--")) from None
    return spec


@register_model("evoflow")
class EvoflowLM(TemplateLM):
    """An evoflow model in lm-evaluation-harness (THEORY C13 exact AR log-likelihoods, C8 path bounds, C14
    decoding); the model arguments are those of the module docstring. Context and continuation are encoded
    as lm-eval's ``hf`` model encodes them (:class:`lm_eval.api.model.TemplateLM`), so that on an imported
    checkpoint the requests, and the AR log-likelihoods, are the ``hf`` model's."""

    stop_check_every = 16  # AR decoding looks for stop strings after every this many tokens

    def __init__(self, pretrained=None, dtype="float32", batch_size=1, controller="ar", path="ar", mc_samples=128,
                 seed=0, max_length=None, device=None, t_min=None, max_batch_size=None, **unknown):
        super().__init__()
        if unknown:
            raise ValueError(f"unknown model argument(s) {', '.join(sorted(unknown))}; known: pretrained, dtype, "
                             f"batch_size, controller, path, mc_samples, seed, max_length, device, t_min")
        self.batch_size = _count(batch_size, "batch_size", 1)
        self.controller = _spec(controller, "controller", lambda s: parse_controller(s, 1))
        self.path = _spec(path, "path", lambda s: parse_path(s, 1))
        self.mc_samples = _count(mc_samples, "mc_samples", 1)
        self.seed = _count(seed, "seed", 0)
        max_length = None if max_length is None else _count(max_length, "max_length", 2)
        t_min = None if t_min is None else _real(t_min, "t_min")
        loaded = load_pretrained(pretrained, dtype, device)
        self.model, self.tokens, self.shifted = loaded.model, loaded.tokens, loaded.shifted
        self._max_length = loaded.max_length if max_length is None else max_length
        self.t_min = loaded.t_min if t_min is None else t_min
        self._device = next(self.model.parameters()).device
        self.pretrained, self.kind = str(pretrained), loaded.kind
        self.model.attention = Frontier()

    # the vocabulary -------------------------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        """The end-of-text id: stops generation, and its string is a stop sequence (C14)."""
        return self.tokens.eot_id

    @property
    def prefix_token_id(self) -> int:
        """The id an empty context becomes (BOS, else EOS), as for ``hf`` (C13: it is conditioned on)."""
        return self.tokens.prefix_id

    @property
    def max_length(self) -> int:
        """Model positions of one scoring window (C13)."""
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        """New tokens a generation request gets when it names no ``max_gen_toks`` (``hf``'s 256; C14)."""
        return 256

    @property
    def tokenizer_name(self) -> str:
        """The directory, which names the tokenizer (lm-eval's cache fingerprint)."""
        return self.pretrained

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Token ids of ``string`` as ``hf`` encodes them (evoflow tokenizers add nothing) (THEORY section 8)."""
        return self.tokens.encode(string, add_special_tokens)

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        """The text of ``tokens`` (THEORY section 8)."""
        return self.tokens.decode(list(tokens), skip_special_tokens)

    # log-likelihoods ----------------------------------------------------------------------------------------

    def _window(self, context: list[int], continuation: list[int]) -> list[int]:
        """The tokens one request is scored on: the last ``max_length`` (one more for a shifted model, whose first
        position only conditions) of context + continuation; the continuation must fit (C13)."""
        if not continuation or len(continuation) > self.max_length:
            raise ValueError(f"a continuation of {len(continuation)} tokens: it must have 1 to max_length = "
                             f"{self.max_length} tokens")
        if self.shifted and not context:
            raise ValueError("a shifted model needs at least one context token before the continuation")
        return (context + continuation)[-(self.max_length + int(self.shifted)):]

    @torch.no_grad()
    def _ar_batch(self, chunk) -> list[tuple[float, bool]]:
        """``(sum of log p(x_i | x_<i) over the continuation, greedy)`` for each request of ``chunk``, from one
        forward of the right-padded batch (C13: a position never sees the tokens after it)."""
        rows = [(self._window(ctx, cont), len(cont)) for _, ctx, cont in chunk]
        x = torch.zeros(len(rows), max(len(r) for r, _ in rows), dtype=torch.long)
        for i, (r, _) in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
        x = x.to(self._device)
        logits = self.model.ar_logits(x)  # (B, L, V): what evoflow.ar_conditionals reads, one two-stream call
        out = []
        for i, (r, n) in enumerate(rows):
            logp = torch.log_softmax(logits[i, len(r) - n : len(r)].to(torch.float64), -1)  # (n, V)
            target = x[i, len(r) - n : len(r)]
            out.append((float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())))
        return out

    @torch.no_grad()
    def _bound(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """``(-NELBO of the continuation given the context along self.path, False)``: the mean over
        ``mc_samples`` trajectories (seeded by ``seed``, so every request sees the same noise) of the
        mixture-kernel bound, the context clean throughout, down to ``t_min`` (C8, C9)."""
        tokens = self._window(context, continuation)
        L, n = len(tokens), len(continuation)
        _, path, K = parse_path(self.path, n)
        grid = torch.zeros(K + 1, L, dtype=torch.float64)
        grid[:, L - n :] = path.grid(n, K)  # the context's columns stay at 0: conditioned on, not scored
        x = torch.tensor(tokens, device=self._device)[None]
        g = torch.Generator(device=self._device).manual_seed(self.seed)
        sizes = [min(self.batch_size, self.mc_samples - s) for s in range(0, self.mc_samples, self.batch_size)]
        totals = [nelbo(GaussianDecoded(self.model), x.expand(size, L), grid, kernel=MixtureKernel(),
                        t_min=self.t_min, generator=g).total for size in sizes]  # one trajectory per row
        return -float(torch.cat(totals).mean()), False

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """``(log-likelihood, greedy)`` per ``((context, continuation), context ids, continuation ids)``: exact
        along the AR path in batches sorted longest first, as ``hf`` batches (C13), or the bound of ``path``
        (C8); answers are added to lm-eval's cache hook, in the requests' order."""
        order = Collator(requests, sort_fn=lambda r: (-len(r[1]) - len(r[2]), tuple(r[1] + r[2])))
        size = self.batch_size if self.path == "ar" else 1
        res = []
        for chunk in tqdm(order.get_batched(n=size), disable=disable_tqdm, desc="evoflow loglikelihood"):
            answers = self._ar_batch(chunk) if self.path == "ar" else [self._bound(c, x) for _, c, x in chunk]
            for (key, _, _), answer in zip(chunk, answers, strict=True):
                res.append(answer)
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
        return order.get_original(res)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each text, every token scored once after ``prefix_token_id``: the windows of
        ``lm_eval.utils.get_rolling_token_windows`` (disjoint, each at most ``max_length`` positions), scored as
        ``loglikelihood`` scores and summed (C13; the bound of ``path`` otherwise, C8)."""
        span = self.max_length - 1 + int(self.shifted)  # a window's tokens before its last
        windows, owner = [], []
        for i, (text,) in enumerate(r.args for r in requests):
            for pair in get_rolling_token_windows(self.tok_encode(text), self.prefix_token_id, span, 1):
                windows.append((None, *make_disjoint_window(pair)))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm), strict=True):
            totals[i] += ll
        for (text,), total in zip((r.args for r in requests), totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return totals

    # generation -------------------------------------------------------------------------------------------

    def _settings(self, gen_kwargs: dict) -> tuple[list[str], int, float, float]:
        """``(stop strings with the EOS string, max new tokens, temperature, top_p)`` of a request's kwargs,
        normalised as ``hf`` normalises them (greedy unless ``do_sample``) (C14)."""
        kwargs = dict(normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks))
        ignored = sorted(set(kwargs) - GENERATION_KEYS)
        if ignored:
            log.warning("evoflow generate_until ignores %s", ", ".join(ignored))
        until = handle_stop_sequences(kwargs.get("until"), eos=self.tok_decode([self.eot_token_id], False))
        temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
        return until, int(kwargs["max_gen_toks"]), temperature, float(kwargs.get("top_p", 1.0))

    def _prompt(self, context: str, new: int) -> list[int]:
        """The context's ids, cut on the left to leave room for ``new`` tokens in ``max_length``; a shifted
        model gets the prefix token for an empty context (C14)."""
        room = self.max_length - new
        if room < 1:
            raise ValueError(f"max_gen_toks = {new} leaves no room for a context in max_length = {self.max_length}")
        ids = self.tok_encode(context)[-room:]
        return ids or ([self.prefix_token_id] if self.shifted else [])

    def _stopped(self, new: torch.Tensor, until: list[str]) -> list[bool]:
        """Whether each row of ``new`` (B, n) holds the EOS id or, decoded, a stop string."""
        return [self.eot_token_id in row or any(u and u in self.tok_decode(row) for u in until)
                for row in new.tolist()]

    @torch.no_grad()
    def _decode(self, prompt: torch.Tensor, new: int, temperature: float, top_p: float, until: list[str],
                g: torch.Generator):
        """``new`` tokens (B, new) after ``prompt`` (B, P) along ``self.controller``, with the KV cache, drawing
        from ``g``; ``ar`` runs in chunks of ``stop_check_every`` (the same law: AR decoding commits one token at
        a time) and ends early once every row has stopped (C14)."""
        cached = CachedDenoiser(self.model)
        step = self.stop_check_every if self.controller == "ar" else new
        tokens, P = prompt, prompt.shape[1]
        while tokens.shape[1] - P < new:
            n = min(step, new - (tokens.shape[1] - P))
            controller, steps = (Staircase(1), n) if self.controller == "ar" else parse_controller(self.controller, n)
            out = generate(cached, tokens.shape[1] + n, controller, steps=steps, batch=prompt.shape[0],
                           prompt=tokens if tokens.shape[1] else None, temperature=temperature, top_p=top_p,
                           generator=g)
            tokens = out.tokens
            if tokens.shape[1] - P < new and all(self._stopped(tokens[:, P:], until)):
                break
        return tokens[:, P:]

    def _text(self, new: list[int], until: list[str]) -> str:
        """The text of generated ids: up to the first EOS id, decoded, cut before the first stop string."""
        if self.eot_token_id in new:
            new = new[: new.index(self.eot_token_id)]
        return postprocess_generated_text(self.tok_decode(new), until, None)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """The continuation text of each ``(context, gen_kwargs)`` request: at most ``max_gen_toks`` tokens along
        ``controller``, cut at the first ``until`` string (C14). Requests with the same kwargs and context length
        are decoded together, ``batch_size`` at a time, sampled ones from one generator seeded by ``seed``."""
        groups = defaultdict(list)
        for i, (context, gen_kwargs) in enumerate(r.args for r in requests):
            settings = self._settings(gen_kwargs)
            prompt = self._prompt(context, settings[1])
            groups[(json.dumps(settings), len(prompt))].append((i, prompt))
        res, g = [""] * len(requests), torch.Generator(device=self._device).manual_seed(self.seed)
        for (key, _), members in tqdm(groups.items(), disable=disable_tqdm, desc="evoflow generate_until"):
            until, new, temperature, top_p = json.loads(key)
            for start in range(0, len(members), self.batch_size):
                part = members[start : start + self.batch_size]
                prompt = torch.tensor([p for _, p in part], dtype=torch.long, device=self._device)
                prompt = prompt.reshape(len(part), -1)
                out = self._decode(prompt, new, temperature, top_p, until, g) if new > 0 else prompt[:, :0]
                for (i, _), row in zip(part, out.tolist(), strict=True):
                    res[i] = self._text(row, until)
                    self.cache_hook.add_partial("generate_until", requests[i].args, res[i])
        return res

    def get_model_info(self) -> dict:
        """What lm-eval records of the model: its directory and kind, parameters, dtype, path and controller."""
        p = next(self.model.parameters())
        return {"pretrained": self.pretrained, "kind": self.kind, "dtype": str(p.dtype).removeprefix("torch."),
                "model_num_parameters": sum(q.numel() for q in self.model.parameters()), "path": self.path,
                "mc_samples": self.mc_samples if self.path != "ar" else None, "controller": self.controller}


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with model ``evoflow`` registered (``python -m evoflow.integrations.lm_eval``)."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
