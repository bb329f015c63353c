"""Shared pieces of the studies: arguments, ``results.json``, markdown tables, figures.

Every study's ``run.py`` parses ``--quick`` (the size its test runs) and ``--out DIR`` with
:func:`arguments`; a full run writes into the study's own folder, a quick one into ``runs/<study>-quick``
unless ``--out`` says otherwise, so that a quick run never overwrites the committed results.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def arguments(doc: str, here: pathlib.Path, argv: list[str] | None) -> tuple[bool, pathlib.Path]:
    """``(quick, out)`` from the command line of a study whose folder is ``here``; ``out`` is created and torch
    is set to one intra-op thread."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small size the tests run (seconds)")
    parser.add_argument("--out", default=None, help="output folder (default: the study's folder; "
                        "runs/<study>-quick with --quick)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the studies' tensors are tiny: intra-op threads only add synchronisation
    default = ROOT / "runs" / f"{here.name}-quick" if args.quick else here
    out = pathlib.Path(args.out) if args.out else default
    out.mkdir(parents=True, exist_ok=True)
    return args.quick, out


def _plain(value):
    """``value`` with tensors, numpy scalars and tuples turned into JSON types; NaN and inf as strings."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: pathlib.Path, data: dict) -> None:
    """Write ``data`` as indented JSON (tensors and numpy values converted, non-finite floats as strings)."""
    path.write_text(json.dumps(_plain(data), indent=2) + "\n")


def num(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits (``0`` exactly as 0)."""
    return "0" if x == 0 else f"{x:.{digits}g}"


def md_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; cells are formatted with :func:`num` when they are floats, ``|`` escaped."""
    def cell(v) -> str:
        return (num(v) if isinstance(v, float) else str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: pathlib.Path, dpi: int = 110) -> str:
    """Lay out, save and close ``fig``; return the file name (for the README's image link)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path.name


def readme_ending(reading: list[str]) -> list[str]:
    """The last lines of a generated README: "What it shows" with the study's sentences, and how to regenerate."""
    return ["## What it shows", "", *reading, "",
            "Regenerate everything (tables, figures, this README) with the command above; `results.json` holds "
            "every number."]
