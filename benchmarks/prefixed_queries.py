"""A development set whose queries are not documents: SciFact with every query re-encoded behind an instruction.

Asymmetric embedding models (E5's "query: ", BGE's "Represent this sentence for searching relevant passages: ")
put every query behind a prefix that moves all query vectors the same way, away from the documents. This builds
that case from the shipped data with the bundled all-MiniLM-L6-v2 (no download): the corpus, its vectors and
the qrels are copied from ``--data``; the queries are encoded again as ``PREFIX + text``. Then run
``quality.py --data OUT`` on it (docs/method.md, "Queries without labels").

    python benchmarks/prefixed_queries.py --out /tmp/scifact-prefixed [--data ../shared/data/scifact]
        [--prefix "Represent this sentence for searching relevant passages: "]

Needs the ``embed`` extra (sentence-transformers and the bundled model).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import machine_info  # noqa: E402

from smec_index.datasets import default_data_dir  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
PREFIX = "Represent this sentence for searching relevant passages: "


def build(src: Path, out: Path, prefix: str = PREFIX, model=None) -> dict:
    """Write the prefixed copy of ``src`` (MiniLM vectors) to ``out``; returns what it wrote (also out/emb/.../
    prefixed.json): the prefix, the mean cosine of each query's new vector with its shipped one, the source."""
    from smec_index.text.encoder import load_model

    emb_src, emb_out = src / "emb" / MODEL, out / "emb" / MODEL
    if not emb_src.is_dir():
        raise SystemExit(f"prefixed_queries: {emb_src} does not exist (the shipped {MODEL} vectors are needed)")
    if out.resolve() == src.resolve():
        raise SystemExit("prefixed_queries: --out must not be the source data set")
    emb_out.mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl.gz", "queries.jsonl.gz"):
        shutil.copyfile(src / name, out / name)
    shutil.copytree(src / "qrels", out / "qrels", dirs_exist_ok=True)
    for name in ("corpus.f16.npy", "corpus_ids.txt", "query_ids.txt"):
        shutil.copyfile(emb_src / name, emb_out / name)
    texts = {}
    with gzip.open(src / "queries.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            texts[rec["_id"]] = rec["text"]
    ids = (emb_src / "query_ids.txt").read_text().split()
    st, _ = load_model(model or MODEL, progress=False)
    Q = st.encode([prefix + texts[i] for i in ids], normalize_embeddings=True, batch_size=64)
    shipped = np.load(emb_src / "queries.f16.npy").astype(np.float32)
    shipped /= np.linalg.norm(shipped, axis=1, keepdims=True)
    np.save(emb_out / "queries.f16.npy", Q.astype(np.float16))
    meta = json.loads((emb_src / "meta.json").read_text())
    meta["query_prefix"] = prefix
    (emb_out / "meta.json").write_text(json.dumps(meta, indent=1))
    info = {"source": str(src), "prefix": prefix, "queries": len(ids),
            "mean_cos_with_shipped": round(float(np.mean(np.sum(Q * shipped, axis=1))), 4),
            "machine": machine_info()}
    (emb_out / "prefixed.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(default_data_dir()), help="source BEIR directory (default shared SciFact)")
    p.add_argument("--out", required=True, help="directory to write the prefixed copy to")
    p.add_argument("--prefix", default=PREFIX, help=f"text put before every query (default {PREFIX!r})")
    a = p.parse_args(argv)
    info = build(Path(a.data), Path(a.out), a.prefix)
    print(f"wrote {a.out}: {info['queries']:,} queries behind {info['prefix']!r}; mean cosine with the shipped "
          f"query vectors {info['mean_cos_with_shipped']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
