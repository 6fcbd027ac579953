"""Issue 18, text side: no code from a loaded model or index directory runs, the model a saved TextIndex names
is checked by sha256 before it is opened, TextIndex saves are manifests, and TextIndex is thread-safe."""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest
from text_helpers import sentence_model

from smec_index import SMEC
from smec_index.errors import IndexStateError
from smec_index.text import Encoder, TextIndex, load_sentence_transformer
from smec_index.text.encoder import model_dir

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("code from the model directory ran")
from transformers import BertConfig as EvilConfig, BertModel as EvilModel
"""
TEXTS = [f"Document number {i} is about {w}." for i, w in enumerate(
    ["cats", "dogs", "rain", "bread", "bees", "trains", "soup", "stars", "bones", "ice", "tea", "maps"] * 2)]


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory):
    """A copy of the bundled model with an SMECStage module (which used to switch trust_remote_code on) and a
    config.json whose auto_map points at Python code in the directory that writes a marker when imported."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "ran.txt"
    smec = SMEC((32,), "pca", progress=False).fit(np.random.default_rng(0).normal(size=(200, 384)).astype(np.float32))
    path = root / "model"
    smec.to_sentence_transformers(sentence_model(), dim=32, portable=False).save(str(path))
    types = [m["type"] for m in json.loads((path / "modules.json").read_text())]
    assert types[-1] == "smec_index.text.st_module.SMECStage"
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil_model.EvilConfig", "AutoModel": "evil_model.EvilModel"}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "evil_model.py").write_text(EVIL.format(marker=str(marker)))
    return path, marker


def test_loading_a_model_never_runs_code_from_its_directory(hostile_model):
    path, marker = hostile_model
    enc = Encoder(str(path), cache=False, progress=False)
    assert enc.dim == 32 and type(enc.model[-1]).__name__ == "SMECStage"
    st = load_sentence_transformer(path)
    assert type(st[-1]).__name__ == "SMECStage"
    assert not marker.exists()
    with pytest.raises(ValueError, match="never trusts code from a model directory"):
        load_sentence_transformer(path, trust_remote_code=True)


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("copy") / "minilm"
    shutil.copytree(model_dir("all-MiniLM-L6-v2"), dst)
    return dst


@pytest.fixture(scope="module")
def saved(model_copy, tmp_path_factory):
    """A TextIndex built with the model copy (vectors given, so nothing is encoded) and saved."""
    enc = Encoder(str(model_copy), cache=False, progress=False)
    X = np.random.default_rng(1).normal(size=(len(TEXTS), 384)).astype(np.float32)
    ti = TextIndex.build(TEXTS, encoder=enc, dims=(16,), method="pca", embeddings=X, progress=False)
    path = tmp_path_factory.mktemp("ti") / "ti"
    ti.save(path)
    return path, ti


def test_the_saved_model_is_verified_by_sha256_before_it_is_opened(saved, model_copy, tmp_path):
    path, ti = saved
    meta = json.loads((path / "textindex.json").read_text())
    assert meta["encoder"]["source"] == str(model_copy)
    assert set(meta["encoder"]["model_files"]) >= {"model.safetensors", "config.json", "modules.json"}
    assert TextIndex.load(path, progress=False).search("cats", k=2)  # the untouched model loads
    marker = tmp_path / "ran.txt"
    cfg_raw = (model_copy / "config.json").read_text()
    try:
        cfg = json.loads(cfg_raw)
        cfg["auto_map"] = {"AutoModel": "evil_model.EvilModel"}
        (model_copy / "config.json").write_text(json.dumps(cfg))
        (model_copy / "evil_model.py").write_text(EVIL.format(marker=str(marker)))
        back = TextIndex.load(path, progress=False)
        with pytest.raises(ValueError, match=r"not the one the index was built with \(files added: \['evil_model.py'\], "
                                             r"missing: \[\], changed: \['config.json'\]\); refused before opening"):
            back.search("cats", k=2)
        assert not marker.exists()
    finally:
        (model_copy / "config.json").write_text(cfg_raw)
        (model_copy / "evil_model.py").unlink(missing_ok=True)


def test_text_index_save_is_a_manifest_symlinks_and_unlisted_files_refused(saved, tmp_path):
    path, ti = saved
    meta = json.loads((path / "textindex.json").read_text())
    assert meta["format_version"] == 2 and "manifest_sha256" in meta
    assert {"texts.sqlite", "index/manifest.json", "index/ids.npy"} <= set(meta["files"])
    for target in ("texts.sqlite", "index"):
        dst = tmp_path / f"link-{target}"
        shutil.copytree(path, dst)
        outside = tmp_path / f"outside-{target}"
        shutil.move(dst / target, outside)
        os.symlink(outside, dst / target)
        with pytest.raises(ValueError, match="TextIndex.load: .*symbolic link"):
            TextIndex.load(dst)
    dst = tmp_path / "extra"
    shutil.copytree(path, dst)
    (dst / "index" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt is not listed in the manifest"):
        TextIndex.load(dst)
    with pytest.raises(ValueError, match="manifest does not list: index/notes.txt"):
        ti.save(dst)
    assert (dst / "index" / "notes.txt").read_text() == "x"


def test_text_index_is_thread_safe(saved, model_copy, tmp_path):
    """Searches during removals never fail; saves during adds always load with as many texts as vectors."""
    path, _ = saved
    ti = TextIndex.load(path, encoder=Encoder(str(model_copy), cache=False, progress=False), progress=False)
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                for hits in ti.search(["cats", "rain"], k=5):
                    assert all(isinstance(t, str) for _, _, t in hits)
        except BaseException as e:  # reported below
            errors.append(e)

    def saver():
        try:
            for i in range(6):
                ti.save(tmp_path / f"s{i}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(2)] + [threading.Thread(target=saver)]
    for t in threads:
        t.start()
    for i in range(6):
        ti.remove([i])
        ti.add([f"added text {i}"], ids=[f"new-{i}"])
    threads[-1].join()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    for i in range(6):
        back = TextIndex.load(tmp_path / f"s{i}", progress=False)
        assert len(back.store) == back.index.ntotal in (len(TEXTS) - 1, len(TEXTS))  # between calls, never inside


def test_save_refuses_texts_and_vectors_that_disagree(saved, tmp_path):
    path, _ = saved
    ti = TextIndex.load(path, progress=False)
    ti.index.remove_ids(np.array([0]))  # changed behind the TextIndex's back
    with pytest.raises(IndexStateError, match="24 texts but 23 vectors"):
        ti.save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
