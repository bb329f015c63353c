"""A model to evaluate, from a directory: an evoflow run or a Hugging Face checkpoint (THEORY section 8, C12, C13).

    loaded = load_pretrained("runs/demo", dtype="float32", device="cpu")   # written by evoflow train
    loaded = load_pretrained("hf/Llama-3.2-1B")                             # imported through evoflow.nn.from_hf

A run directory (``checkpoints/`` beside ``config.json``) loads with :func:`evoflow.train.session.load_model`
and its own tokenizer; its models are not shifted (token 0 is predicted from nothing). A Hugging Face
directory (``config.json`` with a ``model_type``) is imported with :func:`evoflow.nn.from_hf` and tokenized
with ``transformers.AutoTokenizer`` exactly as lm-eval's ``hf`` model tokenizes it; its model is shifted
(the logits of token i come from position i - 1), so position 0 holds a BOS or a context token and is never
scored; its context is what lm-eval resolves from config.json (at most its sliding window less one position,
which the import does not implement). Either way the model is in eval mode on ``device``, in ``dtype``.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import torch

__all__ = ["Loaded", "Tokens", "load_pretrained", "parse_device", "parse_dtype"]

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "fp64": torch.float64,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class Tokens:
    """Text to ids and back for one loaded model: ``encode(text, add_special_tokens)``, ``decode(ids)``, the
    end-of-text id ``eot_id`` and the id ``prefix_id`` that conditions an empty context (THEORY section 8).

    ``tokenizer`` is an evoflow ``TextTokenizer`` (no special tokens added; EOS is both ids) or a
    ``transformers`` tokenizer, used as lm-eval's ``hf`` model uses it: its own special tokens unless told,
    none when the text already starts with the BOS string, ``prefix_id`` the BOS (the EOS without one),
    special tokens left out of decoded text.
    """

    def __init__(self, tokenizer, hf: bool):
        self.tokenizer, self.hf = tokenizer, hf
        if hf:
            self.eot_id = tokenizer.eos_token_id
            self.prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        else:
            self.eot_id = self.prefix_id = tokenizer.eos_id
        self.prefix_text = self.decode([self.prefix_id], skip_special_tokens=False)

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of ``text`` (special tokens: see the class)."""
        if not self.hf:
            return self.tokenizer.encode(text)
        if add_special_tokens is None and self.prefix_text and text.startswith(self.prefix_text):
            add_special_tokens = False  # the text carries its BOS already (lm-eval's has_bos_prefix)
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return list(self.tokenizer.encode(text, **kwargs))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """The text of ``ids`` (an evoflow tokenizer keeps its EOS string; see the class)."""
        if not self.hf:
            return self.tokenizer.decode(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


@dataclass
class Loaded:
    """A model ready to score (eval mode, on its device), its :class:`Tokens`, the context it was made for
    (``max_length`` tokens), the ``t_min`` its bounds run down to, whether it is ``shifted`` (an AR readout,
    C13) and which kind of directory it came from (``"run"`` or ``"hf"``)."""

    model: torch.nn.Module
    tokens: Tokens
    max_length: int
    t_min: float
    shifted: bool
    kind: str


def parse_dtype(dtype) -> torch.dtype:
    """The torch dtype named ``dtype`` (``float32``, ``bfloat16``, ...; a ``torch.dtype`` passes), else a
    ``ValueError`` naming ``dtype`` (THEORY section 8: the model's precision)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    name = str(dtype).removeprefix("torch.").lower()
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[name]


def parse_device(device) -> torch.device:
    """``device`` as a torch device (None: ``cuda`` when available, else ``cpu``), else a ``ValueError`` naming
    ``device`` (THEORY section 8)."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must name a torch device (cpu, cuda, cuda:0, ...), got {device!r}") from None


def _kind(path: pathlib.Path) -> str:
    """``"run"``, ``"hf"``, or a ``ValueError`` naming ``pretrained`` and saying what was expected."""
    from evoflow.train.session import is_checkpoint_dir

    if (path / "checkpoints").is_dir():
        return "run"
    if is_checkpoint_dir(path):
        return "hf"
    raise ValueError(f"pretrained: {path} is neither an evoflow run directory (with the checkpoints/ that "
                     f"evoflow train writes) nor a Hugging Face model directory (config.json with a model_type)")


def _load_run(path: pathlib.Path, dtype: torch.dtype, device: torch.device) -> Loaded:
    from evoflow.train.session import load_model

    model, cfg, tokenizer, _ = load_model(path)  # CheckpointError (a ValueError) names a damaged file
    return Loaded(model.to(device=device, dtype=dtype), Tokens(tokenizer, hf=False), cfg.seq, cfg.t_min,
                  bool(getattr(model.config, "shift", False)), "run")


def _load_hf(path: pathlib.Path, dtype: torch.dtype, device: torch.device) -> Loaded:
    import transformers
    from lm_eval.models.utils import resolve_max_length

    from evoflow.nn import from_hf

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = from_hf(path, dtype=dtype, device=device)  # HFImportError (a ValueError) names what is wrong
    max_length = resolve_max_length(transformers.AutoConfig.from_pretrained(path), tokenizer)  # as hf resolves it
    if model.config.sliding_window is not None:  # a window of max_length + 1 positions must fit in it
        max_length = min(max_length, model.config.sliding_window - 1)
    return Loaded(model, Tokens(tokenizer, hf=True), max_length, 0.0, bool(model.config.shift), "hf")


def load_pretrained(pretrained, dtype="float32", device=None) -> Loaded:
    """The model in directory ``pretrained`` (a run of ``evoflow train`` or a Hugging Face checkpoint), in
    ``dtype`` on ``device``, with its tokenizer and context length (THEORY section 8, C12). Errors are
    ``ValueError``s naming the argument: a missing or non-directory ``pretrained``, a directory of neither kind,
    an unknown ``dtype`` or ``device``."""
    if pretrained is None or str(pretrained) == "":
        raise ValueError("pretrained is required: pretrained=DIR, a run directory of evoflow train or a Hugging "
                         "Face model directory")
    path = pathlib.Path(str(pretrained)).expanduser()
    if not path.is_dir():
        raise ValueError(f"pretrained: {path} is not a directory" + ("" if path.exists() else " (it does not exist)"))
    dtype, device = parse_dtype(dtype), parse_device(device)
    loaded = (_load_run if _kind(path) == "run" else _load_hf)(path, dtype, device)
    loaded.model.eval().requires_grad_(False)
    return loaded
