"""What every benchmark's Markdown snippet ends with: when, on what machine and with which libraries it ran."""

from __future__ import annotations


def measured_on(created: str, env: dict, *also: str) -> str:
    """``Measured <date> on <cpu> x<count> (load average L), Python P, torch T[, <lib> <version> ...].``

    ``also`` names further libraries of ``env`` to state (``"captum"``, ``"streamlit"``).
    """
    versions = ", ".join([f"Python {env['python']}", f"torch {env['torch']}", *(f"{lib} {env[lib]}" for lib in also)])
    return (f"Measured {created[:10]} on {env['cpu']} x{env['cpu_count']} (load average {env['load_average']:.1f}), "
            f"{versions}.")
