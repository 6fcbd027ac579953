"""Shared by the tests of smec_index.text: one all-MiniLM-L6-v2 per test session, loaded from the bundled package."""

from __future__ import annotations

import functools

from smec_index.text.encoder import load_model as _load_model  # bound now: CLI tests patch the module's name


@functools.lru_cache(maxsize=None)
def sentence_model():
    """The bundled all-MiniLM-L6-v2 as a SentenceTransformer, loaded once (about 5 s)."""
    model, _ = _load_model("all-MiniLM-L6-v2", device="cpu")
    return model
