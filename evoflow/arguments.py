"""Plain Python numbers from the scalar arguments a user passes: counts and reals.

Counts (steps, block sizes, lengths, numbers of samples) and reals (``t_min``, a window width)
reach the core from Python, from NumPy (``np.int64(6)``, ``np.float32(0.1)``) and from 0-d
tensors (``x.shape[0]`` is an int, ``x.sum()`` is a tensor). :func:`as_int` and :func:`as_float`
accept all of them and return ``int`` / ``float``, so the rest of the code (the grids of THEORY
section 4, the time map of section 5) sees one kind of number. The checks are duck-typed:
``operator.index`` for integers, ``numbers.Real`` or ``float()`` of a 0-d array for reals, so
the core imports no NumPy for this. ``bool`` (and boolean arrays) is refused in both: ``True``
is an int to Python but never a count or a time. Failures are ``TypeError`` (wrong kind) or
``ValueError`` (out of range), each naming the argument and what it accepts.
"""

from __future__ import annotations

import math
import numbers
import operator

__all__ = ["as_float", "as_int"]


def _dtype_name(value: object) -> str:
    """The dtype of an array or tensor as NumPy spells it (``bool``, ``int64``, ``complex64``), else ``""``."""
    return str(getattr(value, "dtype", "")).removeprefix("torch.")


def _is_bool(value: object) -> bool:
    """``bool``, ``numpy.bool_`` or a boolean array/tensor."""
    return isinstance(value, bool) or _dtype_name(value) == "bool"


def as_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python ``int``, for counts such as ``steps``, ``block``, ``length``, ``n``.

    Accepts an ``int``, a NumPy integer, or a 0-d integer array or tensor; refuses ``bool``,
    floats (even integral ones such as ``2.0``: a count given as a float is usually a bug)
    and arrays or tensors that are not 0-d (``TypeError``). ``minimum`` / ``maximum`` bound the
    value, ends included (``ValueError``). The grids of THEORY section 4 are sized by such counts.
    """
    kind = "an integer (int, NumPy integer or 0-d integer tensor)"
    if _is_bool(value):
        raise TypeError(f"{name} must be {kind}, got a bool ({value!r})")
    if getattr(value, "ndim", 0) != 0:
        raise TypeError(f"{name} must be {kind}, got an array of shape {tuple(value.shape)}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        if maximum is None:
            bound = f">= {minimum}"
        else:
            bound = f"<= {maximum}" if minimum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}, got {number}")
    return number


def _describe(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _real(value: object, name: str) -> float:
    """``float(value)`` for a real number or a 0-d real array/tensor, else ``TypeError`` naming ``name``."""
    kind = "a real number (int, float, NumPy number or 0-d real tensor)"
    if _is_bool(value):
        raise TypeError(f"{name} must be {kind}, got a bool ({value!r})")
    if isinstance(value, numbers.Real):
        return float(value)
    if "complex" in _dtype_name(value):
        raise TypeError(f"{name} must be {kind}, got dtype {_dtype_name(value)}")
    if getattr(value, "ndim", None) != 0:
        shape = getattr(value, "shape", None)
        what = f"an array of shape {tuple(shape)}" if shape is not None else f"{type(value).__name__} {value!r}"
        raise TypeError(f"{name} must be {kind}, got {what}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}") from None


def as_float(value: object, name: str, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a Python ``float``, for reals such as ``t_min`` (THEORY section 5) or a window width.

    Accepts an ``int``, a ``float``, any NumPy number, or a 0-d real array or tensor; refuses
    ``bool``, complex numbers, strings and arrays or tensors that are not 0-d (``TypeError``).
    The value must lie in the interval from ``low`` to ``high`` (``None``: unbounded), each end
    closed unless ``low_open`` / ``high_open``; an unbounded end is open, so infinities are
    refused unless an end says ``inf`` explicitly, and NaN is always refused (``ValueError``).
    """
    number = _real(value, name)
    low_open, high_open = low is None or low_open, high is None or high_open
    low, high = -math.inf if low is None else float(low), math.inf if high is None else float(high)
    above = number > low if low_open else number >= low  # NaN fails every comparison
    below = number < high if high_open else number <= high
    if not (above and below):
        raise ValueError(f"{name} must be a real number in {_describe(low, high, low_open, high_open)}, got {number!r}")
    return number
