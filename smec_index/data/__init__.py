"""Data shipped inside the package: SciFact with all-MiniLM-L6-v2 embeddings, for ``smec-index demo``.

See ``README.md`` in this directory for the source, the license (CC BY-NC 2.0) and what was kept.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_MODEL", "demo_data_dir"]

DEMO_MODEL = "all-MiniLM-L6-v2"


def demo_data_dir() -> Path:
    """The shipped SciFact directory, in the BEIR layout that ``smec_index.datasets.load_beir`` reads."""
    return Path(__file__).resolve().parent / "scifact"
