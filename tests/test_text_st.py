"""SMEC as a sentence-transformers module: encode() equals SMEC.transform(model.encode()), saved and reloaded
in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from text_helpers import sentence_model

from smec_index import SMEC
from smec_index.data import demo_data_dir
from smec_index.datasets import load_beir

TEXTS = ["Does vitamin D prevent fractures?", "Stem cells repair damaged heart tissue after infarction.",
         "Aspirin lowers the risk of colorectal cancer.", "0-dimensional biomaterials show inductive properties."]


@pytest.fixture(scope="module")
def smec():
    """Supervised SMEC (64, 32) on the shipped SciFact embeddings (so the full dim is adapted too)."""
    ds = load_beir(demo_data_dir(), "all-MiniLM-L6-v2")
    train_qids, split, _, _ = ds.supervised_split(0)
    Q, pairs = ds.pairs(train_qids[:200], split)
    return SMEC((64, 32), "smec", seed=0, progress=False, max_epochs=2, ads_epochs=1, patience=1).fit(
        ds.corpus, queries=Q, qrels=pairs)


def test_encode_equals_transform_before_and_after_reload_in_a_fresh_process(smec, tmp_path):
    model = sentence_model()
    base = model.encode(TEXTS)
    dirs = {}
    # 32: the default (portable), which a plain SentenceTransformer(path) reloads
    for dim, portable in ((64, False), (32, None), (384, False)):
        st = (smec.to_sentence_transformers(model, dim=dim) if portable is None
              else smec.to_sentence_transformers(model, dim=dim, portable=portable))
        portable = True if portable is None else portable
        expected = smec.transform(base, dim=dim)
        got = st.encode(TEXTS)
        assert got.shape == (len(TEXTS), dim) and np.abs(got - expected).max() < 1e-5
        assert st.get_embedding_dimension() == dim
        path = tmp_path / f"st-{dim}"
        st.save(str(path))
        np.save(tmp_path / f"expected-{dim}.npy", expected)
        dirs[dim] = (str(path), portable)
    stage = json.loads((tmp_path / "st-64" / "3_SMECStage" / "config.json").read_text())
    assert stage["kind"] == "smec_index.SMECStage" and stage["format_version"] == 1 and stage["out_features"] == 64
    assert (tmp_path / "st-64" / "3_SMECStage" / "model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pkl"))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from sentence_transformers import SentenceTransformer
        from smec_index.text import load_sentence_transformer
        texts = json.loads(sys.argv[1])
        for dim, (path, portable) in json.loads(sys.argv[2]).items():
            # portable: sentence-transformers' own modules, plain SentenceTransformer(path) loads it;
            # SMECStage: the class comes from smec_index, which sentence-transformers 6 imports only when trusted
            st = SentenceTransformer(path, local_files_only=True) if portable else load_sentence_transformer(path)
            kinds = [type(m).__name__ for m in st]
            assert portable or kinds[-1] == "SMECStage", kinds
            np.save(path + "-reloaded.npy", st.encode(texts))
        print("ok")
    """)
    env_cmd = [sys.executable, "-c", script, json.dumps(TEXTS), json.dumps({str(k): v for k, v in dirs.items()})]
    res = subprocess.run(env_cmd, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
    for dim, (path, _) in dirs.items():
        got = np.load(path + "-reloaded.npy")
        assert np.abs(got - np.load(tmp_path / f"expected-{dim}.npy")).max() < 1e-5


def test_an_encoder_over_a_saved_smec_model(smec, tmp_path):
    """A saved SMEC pipeline is a model directory like any other: Encoder(path) encodes to the SMEC dim."""
    from smec_index.text import Encoder

    model = sentence_model()
    smec.to_sentence_transformers(model, dim=64).save(str(tmp_path / "st"))
    enc = Encoder(str(tmp_path / "st"), cache=False, progress=False)
    assert enc.dim == 64 and enc.name == "st"
    assert np.abs(enc.encode(TEXTS) - smec.transform(model.encode(TEXTS), dim=64)).max() < 1e-5


def test_stage_refuses_bad_input_and_other_versions(smec, tmp_path):
    from smec_index.text import SMECStage

    model = sentence_model()
    with pytest.raises(ValueError, match="dim 48 is not trained"):
        smec.to_sentence_transformers(model, dim=48)
    with pytest.raises(TypeError, match="portable must be a bool"):
        smec.to_sentence_transformers(model, dim=64, portable="yes")
    other = SMEC((16,), "pca").fit(np.random.default_rng(0).normal(size=(100, 40)).astype(np.float32))
    with pytest.raises(ValueError, match="model's embeddings have 384 dims; the compressor was fitted on 40-dim"):
        other.to_sentence_transformers(model, dim=16)
    with pytest.raises(ValueError, match="not fitted"):
        SMEC((16,)).to_sentence_transformers(model, dim=16)
    stage = smec.to_sentence_transformers(model, dim=64, portable=False)[-1]
    stage.save(str(tmp_path))
    assert SMECStage.load(str(tmp_path)).M.equal(stage.M)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "format_version": 9}))
    with pytest.raises(ValueError, match="format version 9; this smec_index reads version 1"):
        SMECStage.load(str(tmp_path))
    with pytest.raises(ValueError, match=r"M has shape \(3, 2\)"):
        SMECStage(4, 2, M=np.zeros((3, 2), np.float32))


def test_reload_trusts_only_known_module_classes(tmp_path):
    from smec_index.text import load_sentence_transformer

    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Evil", "type": "evil_package.Module"}]))
    with pytest.raises(ValueError, match=r"uses module classes \['evil_package.Module'\], which are neither"):
        load_sentence_transformer(tmp_path)
    with pytest.raises(ValueError, match="no readable modules.json"):
        load_sentence_transformer(tmp_path / "missing")
