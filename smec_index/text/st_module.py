"""The SMEC stage as a sentence-transformers module, so that ``SentenceTransformer.encode`` returns SMEC vectors.

``SMECStage`` maps the pipeline's ``sentence_embedding`` x to ``normalise(normalise(x) @ M + c)``, the affine
map of one trained dim of a ``SMEC`` compressor (``SMEC.transform`` exactly, in torch). Appended to a model's
modules (``SMEC.to_sentence_transformers``), every tool built on ``SentenceTransformer.encode`` gets the
compressed vectors.

Saved like sentence-transformers' own modules, in the model directory's ``<i>_SMECStage/`` folder:
``config.json`` (kind, format version, dims, provenance) and ``model.safetensors`` (M, c). No pickle.
Loading needs ``smec_index`` installed: ``smec_index.text.load_sentence_transformer(path)`` (or ``Encoder(path)``)
resolves the class to the installed one with ``trust_remote_code=False``, so no code from the directory runs;
a plain ``SentenceTransformer(path)`` of sentence-transformers 6+ asks for ``trust_remote_code=True`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.modules import Module

__all__ = ["SMECStage", "to_sentence_transformers", "load_sentence_transformer", "STAGE_FORMAT_VERSION"]

STAGE_FORMAT_VERSION = 1
STAGE_KIND = "smec_index.SMECStage"
_WEIGHTS = "model.safetensors"


class SMECStage(Module):
    """One trained dim of a SMEC compressor: ``sentence_embedding`` (in_features) -> L2-normalised (out_features).

    The map is frozen (buffers, not parameters): it was learned on the corpus by ``SMEC.fit``.

    Args:
        in_features: the model's embedding dim D.
        out_features: the SMEC dim (``in_features`` itself for the adapted full vector of a supervised fit).
        method: the compressor's method, for the record.
        supervised: whether the compressor was trained with labels, for the record.
        M, c: the map's matrix (in_features, out_features) and offset (out_features,); zeros when None (load).
    """

    config_keys = ["in_features", "out_features", "method", "supervised"]

    def __init__(self, in_features: int, out_features: int, method: str = "smec", supervised: bool = False,
                 M: torch.Tensor | None = None, c: torch.Tensor | None = None) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SMECStage: {name} must be a positive int, got {v!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.method = str(method)
        self.supervised = bool(supervised)
        M = torch.zeros(in_features, out_features) if M is None else torch.as_tensor(M, dtype=torch.float32)
        c = torch.zeros(out_features) if c is None else torch.as_tensor(c, dtype=torch.float32)
        if tuple(M.shape) != (in_features, out_features) or tuple(c.shape) != (out_features,):
            raise ValueError(f"SMECStage: M has shape {tuple(M.shape)} and c {tuple(c.shape)}; expected "
                             f"({in_features}, {out_features}) and ({out_features},)")
        self.register_buffer("M", M.contiguous().clone())
        self.register_buffer("c", c.contiguous().clone())

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        x = features["sentence_embedding"]
        y = F.normalize(x.to(self.M.dtype), p=2, dim=-1) @ self.M + self.c
        features["sentence_embedding"] = F.normalize(y, p=2, dim=-1)
        return features

    def get_embedding_dimension(self) -> int:
        return self.out_features

    def get_config_dict(self) -> dict[str, Any]:
        return {"kind": STAGE_KIND, "format_version": STAGE_FORMAT_VERSION, **super().get_config_dict()}

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """``config.json`` and ``model.safetensors`` in ``output_path`` (always safetensors: no pickle)."""
        from safetensors.torch import save_file

        self.save_config(output_path)
        save_file({"M": self.M.detach().cpu().contiguous(), "c": self.c.detach().cpu().contiguous()},
                  os.path.join(output_path, _WEIGHTS))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs: Any) -> "SMECStage":
        """Read what ``save`` wrote; ValueError for another kind or format version, or missing weights."""
        from safetensors.torch import load_file

        hub = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
                   local_files_only=local_files_only)
        where = f"SMECStage.load({model_name_or_path!r}, {subfolder!r})"
        config = cls.load_config(model_name_or_path, **hub)
        if config.get("kind") != STAGE_KIND:
            raise ValueError(f"{where}: config.json is not an SMECStage config (kind={config.get('kind')!r})")
        if config.get("format_version") != STAGE_FORMAT_VERSION:
            raise ValueError(f"{where}: format version {config.get('format_version')!r}; this smec_index reads "
                             f"version {STAGE_FORMAT_VERSION}")
        weights = cls.load_file_path(model_name_or_path, filename=_WEIGHTS, **hub)
        if weights is None:
            raise ValueError(f"{where}: {_WEIGHTS} is missing")
        tensors = load_file(weights)
        if set(tensors) != {"M", "c"}:
            raise ValueError(f"{where}: {_WEIGHTS} holds {sorted(tensors)}; expected ['M', 'c']")
        return cls(config["in_features"], config["out_features"], config.get("method", "smec"),
                   config.get("supervised", False), tensors["M"], tensors["c"])

    def __repr__(self) -> str:
        return (f"SMECStage({self.in_features} -> {self.out_features}, method={self.method!r}, "
                f"supervised={self.supervised})")


def to_sentence_transformers(smec: Any, model: Any, dim: int, portable: bool = True) -> Any:
    """A ``SentenceTransformer`` made of ``model``'s modules (shared, not copied) followed by the SMEC map to ``dim``.

    ``model``: a ``SentenceTransformer``, an ``Encoder``, a bundled model name or a model directory; its
    embedding dim must be the compressor's input dim. By default (``portable=True``) the map is
    sentence-transformers' own ``Normalize``, ``Dense`` (identity activation) and ``Normalize`` modules, so a
    plain ``SentenceTransformer(path)`` reloads a saved pipeline anywhere (sentence-transformers 6 imports
    module classes from other packages only with ``trust_remote_code=True``). ``portable=False`` uses one
    ``SMECStage`` instead, which records the compressor (method, dims) in the directory and reloads with
    ``load_sentence_transformer(path)`` when smec_index is installed.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize

    from .encoder import Encoder, load_model

    where = "to_sentence_transformers"
    smec._check_fitted(where)
    if not isinstance(portable, bool):
        raise TypeError(f"{where}: portable must be a bool, got {portable!r}")
    if isinstance(model, Encoder):
        model = model.model
    elif not isinstance(model, SentenceTransformer):
        model, _ = load_model(model)
    proj = smec.projection(dim)
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    D = int(get())
    if D != smec.input_dim_:
        raise ValueError(f"{where}: the model's embeddings have {D} dims; the compressor was fitted on "
                         f"{smec.input_dim_}-dim embeddings")
    M, c = torch.from_numpy(proj.M.copy()), torch.from_numpy(proj.c.copy())
    if portable:
        dense = Dense(D, int(dim), bias=True, activation_function=torch.nn.Identity(),
                      init_weight=torch.nn.Parameter(M.T.contiguous()), init_bias=torch.nn.Parameter(c))
        stages = [Normalize(), dense, Normalize()]
    else:
        stages = [SMECStage(D, int(dim), smec.method, bool(smec.supervised_), M, c)]
    st = SentenceTransformer(modules=[*model, *stages], device=str(model.device), similarity_fn_name="cosine")
    st.max_seq_length = model.max_seq_length
    return st


def load_sentence_transformer(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Reload a model saved with an ``SMECStage``: ``SentenceTransformer(path, local_files_only=True,
    trust_remote_code=False)``, with the ``SMECStage`` class resolved to this installed package (so no code from
    the directory runs, whatever its files say). A directory that names any module class outside
    sentence-transformers and smec_index is refused with a ValueError naming it, as is ``trust_remote_code``."""
    from .encoder import module_types, open_model

    where = "load_sentence_transformer"
    if kwargs.pop("trust_remote_code", False):
        raise ValueError(f"{where}: never trusts code from a model directory; if you trust it, load it with "
                         f"SentenceTransformer(path, trust_remote_code=True) yourself")
    path = Path(path)
    try:
        types = module_types(path)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{where}: {str(path)!r} has no readable modules.json ({e}); it is not a saved "
                         f"sentence-transformers model") from None
    foreign = [t for t in types if not t.startswith(("sentence_transformers.", "smec_index."))]
    if foreign:
        raise ValueError(f"{where}: {str(path)!r} uses module classes {foreign}, which are neither "
                         f"sentence-transformers' nor smec_index's; if you trust that code, load it with "
                         f"SentenceTransformer(path, trust_remote_code=True)")
    return open_model(path, **kwargs)
