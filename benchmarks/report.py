"""What every benchmark's results end with: when, on what machine and with which libraries it ran, and where they
are written (``benchmarks/results/<name>.json`` with its Markdown table beside it)."""

from __future__ import annotations

import json
from pathlib import Path

from core.metadata import atomic_write_text


def measured_on(created: str, env: dict, *also: str) -> str:
    """``Measured <date> on <cpu> x<count> (load average L), Python P, torch T[, <lib> <version> ...].``

    ``also`` names further libraries of ``env`` to state (``"captum"``, ``"streamlit"``).
    """
    versions = ", ".join([f"Python {env['python']}", f"torch {env['torch']}", *(f"{lib} {env[lib]}" for lib in also)])
    return (f"Measured {created[:10]} on {env['cpu']} x{env['cpu_count']} (load average {env['load_average']:.1f}), "
            f"{versions}.")


def write_results(out: str | Path, result: dict, table: str) -> str:
    """``result`` as JSON at ``out`` and ``table`` beside it as ``.md`` (each written atomically, the folder made);
    returns ``table``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), table)
    return table
