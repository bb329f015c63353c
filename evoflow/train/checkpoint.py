"""Training checkpoints that survive a kill, are verified on load and never unpickle (THEORY section 8).

    save_checkpoint(run_dir, step, model.state_dict(), optimizer, meta={"rng": rng_state(), "data": pos})
    ckpt = load_checkpoint(run_dir)                  # the newest checkpoint that verifies
    model.load_state_dict(ckpt.model); optimizer.load_state_dict(ckpt.optimizer); set_rng_state(ckpt.meta["rng"])

A checkpoint is ``run_dir/checkpoints/step-<step:08d>/``: ``model.safetensors`` (the state dict, contiguous
CPU tensors, shared storage cloned), ``optimizer.safetensors`` and ``meta.safetensors`` (the tensors of the
optimizer state and of ``meta``, when there are any), ``state.json`` (the step and the :func:`flatten_state`
skeletons) and ``manifest.json`` (size and sha256 of every other file, and a sha256 of its own content).
``meta`` is passed raw (``rng_state()`` as it is, config, loader position, tokenizer JSON): it is flattened
like the optimizer state and comes back exactly. A save writes a temporary sibling folder (files and folder
fsync'ed), renames it into place, replaces ``latest.json`` atomically, and only then prunes: a kill at any
moment leaves the old state or the new one. Loading checks the manifest before parsing anything and parses
with ``safetensors`` and ``json`` only, never pickle. One writer per run directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch

__all__ = ["Checkpoint", "CheckpointError", "checkpoint_steps", "flatten_state", "latest_checkpoint",
           "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state", "unflatten_state"]

FORMAT = "evoflow-checkpoint/1"
_STEP_DIR = re.compile(r"step-(\d{8,})")
_LEFTOVERS = (".tmp-", ".trash-", ".latest.json.tmp-")
_TAGS = ("dict", "tuple", "tensor", "float")
_NONFINITE = ("nan", "inf", "-inf")


class CheckpointError(ValueError):
    """A missing, incomplete or corrupted checkpoint; the one-line message names the file (THEORY section 8)."""


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint: the state dict (CPU tensors), the optimizer state or None, ``meta`` and
    the folder (THEORY section 8: the learned model's training state)."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: object | None
    meta: dict = field(default_factory=dict)
    path: Path | None = None


def flatten_state(obj) -> tuple[dict[str, torch.Tensor], object]:
    """Split nested dicts/lists/tuples/scalars/tensors (``optimizer.state_dict()``, :func:`rng_state`) into a
    flat dict of tensors keyed by dotted path and a JSON-able skeleton (THEORY section 8, stored without pickle).

    Lists stay arrays and scalars themselves; other nodes are one-key objects: ``{"tensor": key}``,
    ``{"tuple": [...]}``, ``{"dict": [[key, value], ...]}``, ``{"float": "nan" | "inf" | "-inf"}``.
    """
    tensors: dict[str, torch.Tensor] = {}
    return tensors, _encode(obj, "", tensors)


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _encode(obj, path: str, tensors: dict):
    if isinstance(obj, torch.Tensor):
        key = path or "value"
        while key in tensors:
            key += "~"
        tensors[key] = obj
        return {"tensor": key}
    if obj is None or type(obj) in (bool, int, str):
        return obj
    if type(obj) is float:
        return obj if math.isfinite(obj) else {"float": repr(obj)}
    if type(obj) is list:
        return [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]
    if type(obj) is tuple:
        return {"tuple": [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]}
    if type(obj) is dict:
        return {"dict": [[_encode_key(k, path), _encode(v, _join(path, k), tensors)] for k, v in obj.items()]}
    raise TypeError(f"flatten_state: cannot store a {type(obj).__name__} (at {path or 'the root'})")


def _encode_key(key, path: str):
    if type(key) is tuple:
        return {"tuple": [_encode_key(k, path) for k in key]}
    if key is None or type(key) in (bool, int, str, float):
        return _encode(key, path, {})
    raise TypeError(f"flatten_state: cannot store a dict key of type {type(key).__name__} (at {path or 'the root'})")


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton):
    """Invert :func:`flatten_state` exactly: int keys, tuples, bools, non-finite floats and tensors come back as
    they were; a malformed skeleton or a missing tensor raises ``ValueError`` (THEORY section 8)."""
    if isinstance(skeleton, list):
        return [unflatten_state(tensors, v) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if len(skeleton) != 1 or next(iter(skeleton)) not in _TAGS:
        raise ValueError(f"unflatten_state: not a skeleton node: {str(skeleton)[:60]}")
    ((tag, value),) = skeleton.items()
    if tag == "tensor":
        if not isinstance(value, str) or value not in tensors:
            raise ValueError(f"unflatten_state: tensor {value!r} is missing")
        return tensors[value]
    if tag == "float":
        if value not in _NONFINITE:
            raise ValueError(f"unflatten_state: {value!r} is not a non-finite float")
        return float(value)
    if tag == "tuple":
        return tuple(unflatten_state(tensors, v) for v in value)
    return {unflatten_state({}, k): unflatten_state(tensors, v) for k, v in value}


def rng_state() -> dict:
    """The states of python ``random``, torch's CPU generator and every CUDA device's; store it in ``meta`` as
    it is (THEORY section 8: a resumed run draws the same noise)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": list(cuda)}


def set_rng_state(state: dict) -> None:
    """Restore a :func:`rng_state`: the next draws repeat exactly (THEORY section 8); CUDA states go to the
    devices present, and a count mismatch warns."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda", []))
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda) != present and cuda:
        warnings.warn(f"set_rng_state: {len(cuda)} CUDA states saved, {present} devices present", stacklevel=2)
    for i, s in enumerate(cuda[:present]):
        torch.cuda.set_rng_state(s, i)


def _cpu_tensors(tensors: dict, what: str) -> dict[str, torch.Tensor]:
    out, storages = {}, set()
    for key, t in tensors.items():
        if not isinstance(key, str) or not isinstance(t, torch.Tensor):
            raise TypeError(f"save_checkpoint: {what} must map str to Tensor, got {key!r}: {type(t).__name__}")
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in storages or t.nbytes != storage.nbytes():
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> dict:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _json(obj) -> bytes:
    return json.dumps(obj, allow_nan=False).encode()


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def _discard(path: Path) -> None:
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _payload(step: int, model, optimizer, meta) -> tuple[dict, dict]:
    model = model.state_dict() if isinstance(model, torch.nn.Module) else model
    optimizer = optimizer.state_dict() if callable(getattr(optimizer, "state_dict", None)) else optimizer
    payload = {"model.safetensors": _cpu_tensors(model, "model")}
    opt_tensors, opt_skeleton = flatten_state(optimizer) if optimizer is not None else ({}, None)
    meta_tensors, meta_skeleton = flatten_state(dict(meta or {}))
    if optimizer is not None:
        payload["optimizer.safetensors"] = _cpu_tensors(opt_tensors, "the optimizer state")
    if meta_tensors:
        payload["meta.safetensors"] = _cpu_tensors(meta_tensors, "meta")
    return payload, {"format": FORMAT, "step": step, "optimizer": opt_skeleton, "meta": meta_skeleton}


def save_checkpoint(run_dir, step: int, model: dict[str, torch.Tensor], optimizer: object | None = None,
                    meta: dict | None = None, keep: int = 2) -> Path:
    """Write ``run_dir/checkpoints/step-<step:08d>/`` atomically and return its path.

    ``model`` is a state dict (a module is accepted), ``optimizer`` an optimizer or its state dict,
    ``meta`` any :func:`flatten_state`-able dict. After the new checkpoint and ``latest.json`` are in
    place, checkpoints with lower steps beyond the ``keep`` newest (the new one counted) are deleted,
    with leftovers of interrupted saves. Re-saving an existing step replaces it.
    (THEORY section 8: the learned model's training state, crash-safe.)
    """
    if type(step) is not int or step < 0 or type(keep) is not int or keep < 1:
        raise ValueError(f"save_checkpoint: step must be an int >= 0 and keep an int >= 1, got {step!r}, {keep!r}")
    payload, state = _payload(step, model, optimizer, meta)
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name, final = f"step-{step:08d}", root / f"step-{step:08d}"
    tmp = root / f".tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        files = {fn: _write(tmp / fn, safetensors.torch.save(t)) for fn, t in payload.items()}
        files["state.json"] = _write(tmp / "state.json", _json(state))
        body = {"format": FORMAT, "step": step, "files": files}
        _write(tmp / "manifest.json", _json({**body, "sha256": _digest(body)}))
        _fsync_dir(tmp)
        if final.exists():
            _discard(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    pointer = root / f".latest.json.tmp-{os.getpid()}"
    _write(pointer, _json({"step": step, "dir": name}))
    os.replace(pointer, root / "latest.json")
    _fsync_dir(root)
    _prune(root, step, keep)
    return final


def _prune(root: Path, step: int, keep: int) -> None:
    dirs = _step_dirs(root)
    older = sorted(s for s in dirs if s < step)
    for s in older[: max(0, len(older) - (keep - 1))]:
        _discard(dirs[s])
    for p in root.iterdir():
        if p.name.startswith(_LEFTOVERS) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(_LEFTOVERS):
            p.unlink(missing_ok=True)


def _step_dirs(root: Path) -> dict[int, Path]:
    out = {}
    for p in root.iterdir() if root.is_dir() else ():
        m = _STEP_DIR.fullmatch(p.name)
        if m and p.name == f"step-{int(m[1]):08d}" and p.is_dir():
            out[int(m[1])] = p
    return out


def checkpoint_steps(run_dir) -> list[int]:
    """The steps of the checkpoint folders in ``run_dir``, by name (not verified), ascending (THEORY section 8)."""
    return sorted(_step_dirs(Path(run_dir) / "checkpoints"))


def _verify(ckpt: Path) -> dict:
    mpath = ckpt / "manifest.json"
    try:
        manifest = json.loads(mpath.read_bytes())
        body = {k: manifest[k] for k in ("format", "step", "files")}
        entries = [(fn, int(e["size"]), str(e["sha256"])) for fn, e in body["files"].items()]
        ok = manifest["sha256"] == _digest(body) and body["format"] == FORMAT and type(body["step"]) is int
    except FileNotFoundError:
        raise CheckpointError(f"{mpath}: missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{mpath}: unreadable manifest ({type(e).__name__}: {e})") from None
    names = {fn for fn, _, _ in entries}
    if not ok or not {"model.safetensors", "state.json"} <= names or any(Path(n).name != n for n in names):
        raise CheckpointError(f"{mpath}: checksum, format or file list does not match (corrupted)")
    for fn, size, sha in entries:
        path = ckpt / fn
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if path.stat().st_size != size:
            raise CheckpointError(f"{path}: {path.stat().st_size} bytes, the manifest says {size} (truncated?)")
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != sha:
                raise CheckpointError(f"{path}: sha256 differs from the manifest (corrupted)")
    return manifest


def _tensors(path: Path, listed: bool) -> dict[str, torch.Tensor]:
    if not listed:
        return {}
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"{path}: not a safetensors file ({type(e).__name__}: {e})".splitlines()[0]) from None


def _load_verified(ckpt: Path, manifest: dict) -> Checkpoint:
    files, spath = manifest["files"], ckpt / "state.json"
    try:
        state = json.loads(spath.read_bytes())
        if state["format"] != FORMAT or state["step"] != manifest["step"] or not {"optimizer", "meta"} <= set(state):
            raise ValueError("format, step or fields differ from the manifest")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{spath}: {e}") from None
    model = _tensors(ckpt / "model.safetensors", True)
    parts = {}
    for part, fn in (("optimizer", "optimizer.safetensors"), ("meta", "meta.safetensors")):
        try:
            parts[part] = unflatten_state(_tensors(ckpt / fn, fn in files), state[part])
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{ckpt / fn}: {e}") from None
    return Checkpoint(step=manifest["step"], model=model, optimizer=parts["optimizer"], meta=parts["meta"], path=ckpt)


def _candidates(root: Path) -> list[Path]:
    dirs, latest, pointed = _step_dirs(root), root / "latest.json", None
    try:
        entry = json.loads(latest.read_bytes())
        pointed = entry["step"] if entry["dir"] == f"step-{entry['step']:08d}" else None
        if pointed not in dirs:
            warnings.warn(f"{latest} points to {entry['dir']!r}, which is not there; scanning", stacklevel=4)
            pointed = None
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"{latest}: unreadable ({type(e).__name__}); scanning", stacklevel=4)
    order = sorted(dirs, key=lambda s: (s != pointed, pointed is not None and s > pointed, -s))
    return [dirs[s] for s in order]


def _resolve(run_dir) -> tuple[Path, dict] | None:
    for path in _candidates(Path(run_dir) / "checkpoints"):
        try:
            return path, _verify(path)
        except CheckpointError as e:
            warnings.warn(f"skipping a bad checkpoint: {e}", stacklevel=3)
    return None


def latest_checkpoint(run_dir) -> Path | None:
    """The newest checkpoint of ``run_dir`` that verifies, or None (THEORY section 8: the training state).

    The one ``latest.json`` names first, then lower steps, newest first, each bad one warned about naming
    the bad file; without a usable ``latest.json`` the ``step-*`` folders are scanned; temporary folders
    of interrupted saves are never candidates.
    """
    found = _resolve(run_dir)
    return None if found is None else found[0]


def load_checkpoint(path) -> Checkpoint:
    """Load a checkpoint folder, or the latest valid one of a run folder (THEORY section 8, never unpickled).

    The manifest is checked (every file present, size and sha256 equal) before anything is parsed, then
    tensors are read with ``safetensors`` and metadata with ``json`` only. Raises :class:`CheckpointError`
    naming the bad file, or ``no checkpoint in <dir>``.
    """
    path = Path(path)
    if (path / "manifest.json").exists() or _STEP_DIR.fullmatch(path.name):
        return _load_verified(path, _verify(path))
    found = _resolve(path)
    if found is None:
        raise CheckpointError(f"no checkpoint in {path}")
    return _load_verified(*found)
