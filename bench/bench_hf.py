"""Imported Hugging Face checkpoints: greedy decoding speed against transformers, import cost (THEORY section 8).

    .venv/bin/python -m bench.bench_hf decode [--length 256] [--batch 1] [--repeats 3]
    .venv/bin/python -m bench.bench_hf import [--size 1b] [--dtype bfloat16]
    .venv/bin/python -m bench.bench_hf adapt [--pretrain 300] [--steps 200] [--anneal 100]

``decode``: a random Llama of the ``demo`` shape (width 128, 4 layers, 4 heads, 2 KV heads, vocabulary 2048)
saved with ``save_pretrained`` and imported with :func:`evoflow.nn.from_hf`; greedy AR decoding of ``length``
tokens after a BOS through ``evoflow.generate`` (``Staircase(1)``, frontier KV cache, ``temperature=0``)
against ``transformers``' ``generate(do_sample=False)`` with its KV cache, on the same weights, interleaved in
one process; the tokens must agree. Prints tokens/s (medians) and the ratio evoflow / transformers.

``import``: a random checkpoint of a :func:`evoflow.nn.get_config` row's body (``1b``: the Llama-3.2-1B body
with a 32k vocabulary) written as safetensors shards, then imported in a fresh process; prints the import's
wall time, its peak resident memory, and the size on disk (the goal: peak memory about one copy of the model).

``adapt``: a small Llama (width 64, 2 layers, a 384-token BPE of the docstrings corpus, tied embeddings)
trained ``--pretrain`` steps as a causal LM with transformers, saved with its tokenizer, scored as imported
(bits/token along the AR path, exact, and the synchronous 16-step bound) and again after ``evoflow train
--init`` for ``--steps`` steps (annealing over ``--anneal``), on the same validation rows.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import evoflow as ef
from evoflow.nn import CachedDenoiser, from_hf, get_config


def _tiny_llama(folder: pathlib.Path):
    import transformers

    torch.manual_seed(0)
    c = get_config("demo")
    cfg = transformers.LlamaConfig(vocab_size=c.vocab, hidden_size=c.width, intermediate_size=c.ffn,
                                   num_hidden_layers=c.layers, num_attention_heads=c.heads,
                                   num_key_value_heads=c.kv_heads, max_position_embeddings=1024, bos_token_id=1)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights than the init: sharper, less repetitive greedy text
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    model.save_pretrained(folder)
    return model


def decode(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reference = _tiny_llama(pathlib.Path(tmp))
        model = from_hf(tmp)
    prompt = torch.ones(args.batch, 1, dtype=torch.long)
    new = args.length - 1

    def ours():
        return ef.generate(CachedDenoiser(model), args.length, ef.Staircase(1), batch=args.batch, prompt=prompt,
                           temperature=0).tokens

    def theirs():
        with torch.no_grad():
            return reference.generate(prompt, do_sample=False, max_new_tokens=new, min_new_tokens=new,
                                      pad_token_id=0)

    methods = {"evoflow (frontier KV cache)": ours, "transformers generate (KV cache)": theirs}
    seconds = {name: [] for name in methods}
    outputs = {}
    names = list(methods)
    for i in range(args.repeats):
        for name in names[i % 2:] + names[: i % 2]:
            start = time.perf_counter()
            outputs[name] = methods[name]()
            seconds[name].append(time.perf_counter() - start)
    same = torch.equal(*outputs.values())
    print(f"greedy decoding, demo-shape Llama, batch {args.batch}, length {args.length} ({new} new tokens), "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats; same tokens: {same}")
    rate = {}
    for name in names:
        med = statistics.median(seconds[name])
        rate[name] = args.batch * new / med
        print(f"  {name:34s} {rate[name]:9.1f} tokens/s   median {med:.3f} s")
    print(f"  ratio evoflow / transformers: {rate[names[0]] / rate[names[1]]:.2f} (goal >= 0.8)")
    if not same:
        raise SystemExit("the two decoders disagree")


def _write_checkpoint(folder: pathlib.Path, size: str, dtype: torch.dtype, shard_bytes: float = 1e9) -> int:
    """A random checkpoint of the ``size`` row's body in ``dtype`` as safetensors shards; returns bytes on disk."""
    from safetensors.torch import save_file

    c = get_config(size)
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=c.vocab, hidden_size=c.width,
                  intermediate_size=c.ffn, num_hidden_layers=c.layers, num_attention_heads=c.heads,
                  num_key_value_heads=c.kv_heads, rope_theta=c.rope_theta, rms_norm_eps=c.norm_eps,
                  hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    (folder / "config.json").write_text(json.dumps(config))
    hd, kv = c.width // c.heads, c.kv_heads
    shapes = {"model.embed_tokens.weight": (c.vocab, c.width), "model.norm.weight": (c.width,),
              "lm_head.weight": (c.vocab, c.width)}
    for i in range(c.layers):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": (c.width, c.width), p + "self_attn.k_proj.weight": (kv * hd, c.width),
                   p + "self_attn.v_proj.weight": (kv * hd, c.width), p + "self_attn.o_proj.weight": (c.width, c.width),
                   p + "mlp.gate_proj.weight": (c.ffn, c.width), p + "mlp.up_proj.weight": (c.ffn, c.width),
                   p + "mlp.down_proj.weight": (c.width, c.ffn), p + "input_layernorm.weight": (c.width,),
                   p + "post_attention_layernorm.weight": (c.width,)}
    g = torch.Generator().manual_seed(0)
    shard, size_now, files, weight_map, total = {}, 0, [], {}, 0

    def flush():
        nonlocal shard, size_now
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, folder / name)
        files.append(name)
        weight_map.update({k: name for k in shard})
        shard, size_now = {}, 0

    for key, shape in shapes.items():
        t = (0.02 * torch.randn(shape, generator=g)).to(dtype) if len(shape) == 2 else torch.ones(shape, dtype=dtype)
        shard[key] = t
        size_now += t.numel() * t.element_size()
        total += t.numel() * t.element_size()
        if size_now >= shard_bytes:
            flush()
    if shard:
        flush()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return total


# peak resident memory: VmHWM of /proc/self/status (per address space, so reset by exec; ru_maxrss is not)
_PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024"
_CHILD = f"""
import sys, time, torch
from evoflow.nn import import_hf
start = time.perf_counter()
model, report = import_hf(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
seconds = time.perf_counter() - start
params = sum(p.numel() * p.element_size() for p in model.parameters())
print(seconds, {_PEAK}, params)
"""


def import_cost(args) -> None:
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = pathlib.Path(tmp)
        start = time.perf_counter()
        disk = _write_checkpoint(folder, args.size, dtype)
        written = time.perf_counter() - start
        base = subprocess.run([sys.executable, "-c", f"import evoflow.nn; print({_PEAK})"],
                              capture_output=True, text=True, check=True)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(folder), args.dtype], capture_output=True, text=True,
                             check=True)
    seconds, peak, params = (float(v) for v in out.stdout.split()[-3:])
    floor = float(base.stdout.split()[-1])
    gib = 2.0**30
    print(f"import of a random {args.size}-shaped Llama checkpoint ({args.dtype}, written in {written:.0f} s)")
    print(f"  on disk {disk / gib:.2f} GiB; model parameters {params / gib:.2f} GiB")
    print(f"  import {seconds:.1f} s; peak resident memory {peak / gib:.2f} GiB "
          f"({(peak - floor) / gib:.2f} GiB above the {floor / gib:.2f} GiB of an interpreter with evoflow.nn): "
          f"{(peak - floor) / params:.2f} x the model")


def pretrained_llama(folder: pathlib.Path, cache: pathlib.Path, seq: int, vocab: int, width: int, ffn: int, steps: int,
                     tied: bool = False):
    """(model, packed data): a 2-layer Llama trained ``steps`` steps (batch 16, AdamW 3e-3, seed 0) as a causal LM
    with transformers on the docstrings corpus under a ``vocab``-token BPE, saved in ``folder`` with its
    tokenizer (``<|endoftext|>`` as BOS and EOS). Shared by ``adapt`` and tests/train/test_init.py."""
    import transformers
    from tokenizers import Tokenizer

    from evoflow.train.data import load_corpus, prepare, train_tokenizer

    corpus = load_corpus("docstrings")
    tok = train_tokenizer(corpus, vocab, cache_dir=cache)
    data = prepare(corpus, tok, seq, 0.05, 0)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=width, intermediate_size=ffn,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=2 * seq, bos_token_id=0, eos_token_id=0,
                                   tie_word_embeddings=tied)
    model = transformers.LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = data.train[torch.randint(0, len(data.train), (16,), generator=g)]
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(folder)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok.to_json()),
                                                eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return model, data


def adapt(args) -> None:
    from evoflow.train.config import TrainConfig
    from evoflow.train.evaluate import score_path
    from evoflow.train.loop import Run

    seq, start = 64, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        folder = root / "llama"
        _, data = pretrained_llama(folder, root / "cache", seq=seq, vocab=384, width=64, ffn=192,
                                   steps=args.pretrain, tied=True)
        rows = data.valid[:64]
        imported = from_hf(folder)
        before = {k: score_path(imported, rows, k, 16, t_min=0.2) for k in ("ar", "sync:16")}
        run_cfg = TrainConfig(init=str(folder), data="docstrings", steps=args.steps, seq=seq, batch=16,
                              anneal=args.anneal, eval_every=args.steps, eval_rows=64, checkpoint_every=args.steps,
                              lr=1e-3, min_lr=1e-4, warmup=10)
        run = Run(run_cfg, root / "run", False, False, lambda *a: None, 0, 1, None)
        assert torch.equal(run.valid.cpu(), rows)
        after = run.fit()
    print(f"adaptation of a small Llama pre-trained {args.pretrain} steps as a causal LM; {args.steps} steps of "
          f"evoflow train --init, anneal {args.anneal}; 64 validation rows x {seq} tokens, bits/token "
          f"({time.perf_counter() - start:.0f} s)")
    print(f"  AR path (exact):     imported {before['ar'].bits:.4f}   adapted {after['val_ar_bits']:.4f}   "
          f"change {100 * (after['val_ar_bits'] / before['ar'].bits - 1):+.1f}%")
    print(f"  sync:16 (bound):     imported {before['sync:16'].bits:.3f} +- {before['sync:16'].stderr:.3f}   "
          f"adapted {after['val_sync_bits']:.3f} +- {after['val_sync_stderr']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("decode")
    d.add_argument("--length", type=int, default=256)
    d.add_argument("--batch", type=int, default=1)
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--threads", type=int, default=torch.get_num_threads())
    i = sub.add_parser("import")
    i.add_argument("--size", default="1b")
    i.add_argument("--dtype", default="bfloat16")
    i.add_argument("--tmp", default=None, help="where to write the checkpoint (default: the system's temp dir)")
    a = sub.add_parser("adapt")
    a.add_argument("--pretrain", type=int, default=300)
    a.add_argument("--steps", type=int, default=200)
    a.add_argument("--anneal", type=int, default=100)
    args = parser.parse_args()
    if args.what == "decode":
        torch.set_num_threads(args.threads)
        decode(args)
    elif args.what == "import":
        import_cost(args)
    else:
        adapt(args)


if __name__ == "__main__":
    main()
