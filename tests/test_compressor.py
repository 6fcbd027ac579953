"""Unit tests of the compressor: ADS, S-XBM memory, losses, stages, the SMEC API and its errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from smec_index import SMEC, NotFittedError
from smec_index._fsutil import write_manifest
from smec_index.compressor import FORMAT_VERSION, api
from smec_index.compressor.api import candidate_ladder
from smec_index.compressor.losses import ListwiseDistillationLoss, RankLoss, SimilarityPreservationLoss
from smec_index.compressor.memory import CrossBatchMemory
from smec_index.compressor.model import DimensionSelector, Projection, StageModel, relaxed_topk
from smec_index.compressor.train import StageReport, TrainConfig
from smec_index.metrics import evaluate_embeddings

FAST = dict(max_epochs=3, ads_epochs=2, patience=2, batch_size=64, memory_size=200, neighbour_pool=20, progress=False)
LEARNED = ["smec", "mrl", "search-adaptor"]


# ---------------------------------------------------------------- ADS
@pytest.mark.parametrize("n,k", [(10, 1), (48, 16), (48, 48), (7, 6)])
def test_ads_inference_picks_exactly_k_distinct_by_importance(n, k):
    sel = DimensionSelector(n, k, torch.randn(n, generator=torch.Generator().manual_seed(0)))
    idx = sel.indices()
    assert idx.shape == (k,) and len(set(idx.tolist())) == k
    assert idx.min() >= 0 and idx.max() < n
    # deterministic top-k of the logits, most important first
    assert set(idx.tolist()) == set(torch.topk(sel.logits, k).indices.tolist())
    assert np.all(np.diff(sel.logits.detach().numpy()[idx]) <= 0)
    np.testing.assert_array_equal(idx, sel.indices())
    assert sel.hard_mask().sum().item() == k and sel.hard_mask()[idx].min().item() == 1.0


def test_ads_ties_go_to_lower_index():
    sel = DimensionSelector(8, 3, torch.zeros(8))
    np.testing.assert_array_equal(sel.indices(), [0, 1, 2])


def test_ads_training_mask_is_relaxed_k_hot_with_gradient_to_every_logit():
    sel = DimensionSelector(20, 5, torch.randn(20, generator=torch.Generator().manual_seed(1)))
    m = sel.mask(0.5, torch.Generator().manual_seed(0))
    assert m.sum().item() == pytest.approx(5.0, abs=1e-4) and m.min().item() >= 0
    (m * torch.arange(20.0)).sum().backward()
    # every coordinate, selected or not, receives gradient: ADS can discover unselected dimensions
    assert torch.all(sel.logits.grad.abs() > 0)
    cold = sel.mask(0.01, torch.Generator().manual_seed(0)).detach()
    assert torch.all((cold - cold.round()).abs() < 1e-3) and cold.round().sum().item() == 5


def test_gumbel_noise_varies_the_training_selection():
    sel = DimensionSelector(30, 10, torch.zeros(30))
    g = torch.Generator().manual_seed(0)
    masks = {tuple(torch.topk(sel.mask(0.05, g).detach(), 10).indices.sort().values.tolist()) for _ in range(5)}
    assert len(masks) > 1


def test_relaxed_topk_tends_to_hard_topk():
    s = torch.tensor([3.0, 1.0, 2.0, -1.0, 0.5])
    soft = relaxed_topk(s, 2, 0.01)
    torch.testing.assert_close(soft, torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]), atol=1e-3, rtol=0)
    assert relaxed_topk(s, 2, 1.0).sum().item() == pytest.approx(2.0, abs=1e-4)


# ---------------------------------------------------------------- S-XBM memory
def test_memory_is_fifo_and_skips_own_id():
    mem = CrossBatchMemory(5, 3, 2)
    for i in range(7):
        t = torch.tensor([[float(i), 0.0, 0.0]])
        mem.enqueue(t, torch.tensor([[float(i), 1.0]]), torch.tensor([i]))
    assert len(mem) == 5
    assert sorted(mem.ids.tolist()) == [2, 3, 4, 5, 6]  # 0 and 1 were overwritten first
    pos, sims, valid = mem.topk(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([6]), 2)
    assert mem.ids[pos[0]].tolist() == [5, 4] and valid.all()
    assert sims[0].tolist() == [5.0, 4.0]


def test_memory_topk_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    mem = CrossBatchMemory(50, 8, 4)
    teacher = torch.nn.functional.normalize(torch.randn(80, 8, generator=g), dim=1)
    for s in range(0, 80, 16):
        mem.enqueue(teacher[s : s + 16], teacher[s : s + 16, :4], torch.arange(s, s + 16))
    q = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    qids = torch.arange(1000, 1006)
    pos, sims, valid = mem.topk(q, qids, 7)
    held = teacher[mem.ids]
    ref = torch.topk(q @ held.T, 7, dim=1)
    torch.testing.assert_close(sims, ref.values)
    assert torch.equal(mem.ids[pos], mem.ids[ref.indices])


@pytest.mark.parametrize("size,n_rows,batch", [(50, 40, 16), (30, 80, 16), (64, 64, 8)])
def test_neighbour_memory_equals_brute_force_fifo_memory(size, n_rows, batch):
    """The precomputed-retrieval memory returns what a scan of the FIFO memory returns, step by step."""
    from smec_index.compressor.memory import NeighbourMemory, teacher_neighbours

    g = torch.Generator().manual_seed(size + n_rows)
    teacher = torch.nn.functional.normalize(torch.randn(n_rows + 5, 8, generator=g), dim=1)
    rows = torch.arange(5, n_rows + 5)  # rows 0..4 are held out, like validation rows
    cand_ids, cand_sims = teacher_neighbours(teacher, rows, n_rows - 1, chunk=7)
    fast = NeighbourMemory(size, cand_ids, cand_sims, rows, n_rows + 5)
    slow = CrossBatchMemory(size, 8, 8)
    order = rows[torch.randperm(n_rows, generator=g)]
    for s in range(0, n_rows, batch):
        anchors = order[s : s + batch]
        k = 6
        ids, sims, valid = fast.topk(anchors, k)
        if len(slow):
            pos, ref_sims, ref_valid = slow.topk(teacher[anchors], anchors, k)
            assert torch.equal(valid, ref_valid)
            assert torch.equal(ids[valid], slow.ids[pos][ref_valid])
            torch.testing.assert_close(sims[valid], ref_sims[ref_valid])
        else:
            assert not valid.any()
        assert torch.all(ids[~valid] == -1) and not torch.any(ids == anchors.unsqueeze(1))
        fast.enqueue(anchors)
        slow.enqueue(teacher[anchors], teacher[anchors], anchors)
        assert len(fast) == len(slow)


def test_neighbour_memory_forgets_overwritten_rows_but_keeps_requeued_ones():
    from smec_index.compressor.memory import NeighbourMemory, teacher_neighbours

    teacher = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    rows = torch.arange(6)
    mem = NeighbourMemory(3, *teacher_neighbours(teacher, rows, 5), rows, 6)
    mem.enqueue(torch.tensor([0, 1, 2]))
    mem.enqueue(torch.tensor([0]))        # 0 again: overwrites the old copy of 0 itself
    mem.enqueue(torch.tensor([3]))        # overwrites 1
    held = set(mem.ids.tolist())
    assert held == {0, 2, 3}
    ids, _, valid = mem.topk(torch.tensor([5]), 5)
    assert set(ids[valid].tolist()) == {0, 2, 3}
    mem.enqueue(torch.tensor([4]))        # overwrites 2; 0's latest copy stays
    ids, _, valid = mem.topk(torch.tensor([5]), 5)
    assert set(ids[valid].tolist()) == {0, 3, 4}


def test_teacher_neighbours_are_exact_and_exclude_self():
    from smec_index.compressor.memory import teacher_neighbours

    teacher = torch.nn.functional.normalize(torch.randn(30, 5, generator=torch.Generator().manual_seed(2)), dim=1)
    rows = torch.arange(3, 30, 2)
    ids, sims = teacher_neighbours(teacher, rows, 4, chunk=4)
    bank = teacher[rows]
    full = bank @ bank.T
    full.fill_diagonal_(float("-inf"))
    ref = torch.topk(full, 4, dim=1)
    assert torch.equal(ids, rows[ref.indices])
    torch.testing.assert_close(sims, ref.values)


def test_memory_reports_empty_slots_invalid():
    mem = CrossBatchMemory(10, 2, 2)
    mem.enqueue(torch.eye(2), torch.eye(2), torch.tensor([0, 1]))
    _, _, valid = mem.topk(torch.eye(2), torch.tensor([0, 1]), 4)
    assert valid.sum(dim=1).tolist() == [1, 1]


# ---------------------------------------------------------------- losses
def test_similarity_preservation_zero_when_preserved_and_positive_otherwise():
    loss = SimilarityPreservationLoss()
    za = torch.nn.functional.normalize(torch.randn(4, 6), dim=1)
    zn = torch.nn.functional.normalize(torch.randn(4, 3, 6), dim=2)
    teacher = torch.einsum("bd,bkd->bk", za, zn)
    assert loss(teacher, za, zn).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(teacher + 0.3, za, zn).item() == pytest.approx(0.3, abs=1e-5)
    valid = torch.zeros(4, 3, dtype=torch.bool)
    valid[:, 0] = True
    assert loss(teacher + 0.3, za, zn, valid).item() == pytest.approx(0.3, abs=1e-5)


def test_similarity_preservation_gradient_moves_student_towards_teacher():
    za = torch.tensor([[1.0, 0.0]], requires_grad=True)
    zn = torch.tensor([[[0.0, 1.0]]])
    SimilarityPreservationLoss()(torch.tensor([[0.9]]), za, zn).backward()
    # teacher similarity is higher than the student's (0): the anchor must move towards the neighbour
    assert za.grad[0, 1] < 0


def test_rank_loss_sign_and_gradient():
    loss = RankLoss(temperature=0.1)
    q = torch.tensor([[1.0, 0.0]])
    good = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # relevant doc first and aligned
    bad = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # relevant doc orthogonal, negative aligned
    rel = torch.tensor([[1.0, 0.0]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    assert loss(q, good, rel, valid) < loss(q, bad, rel, valid)
    docs = torch.tensor([[[0.2, 1.0], [1.0, 0.3]]], requires_grad=True)
    before = loss(q, docs, rel, valid)
    before.backward()
    assert docs.grad[0, 0, 0] < 0  # turning the relevant doc towards the query lowers the loss
    assert docs.grad[0, 1, 0] > 0  # turning the negative towards the query raises the loss
    with torch.no_grad():
        assert loss(q, docs - 0.1 * docs.grad, rel, valid) < before


def test_rank_loss_uses_graded_relevance_and_masks():
    loss = RankLoss(temperature=1.0)
    q = torch.tensor([[1.0, 0.0]])
    docs = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    l1 = loss(q, docs, torch.tensor([[1.0, 0.0, 0.0]]), valid)
    l2 = loss(q, docs, torch.tensor([[2.0, 0.0, 0.0]]), valid)
    assert l2.item() == pytest.approx(2 * l1.item())
    assert loss(q, docs, torch.zeros(1, 3), valid).item() == 0.0


# ---------------------------------------------------------------- stages and projections
def test_stage_model_eval_equals_composed_projection(synth):
    X = synth[:50]
    m = StageModel(48, (16,), ads=True, init_logits=torch.randn(48))
    with torch.no_grad():
        m.adapter.linear.weight.normal_(std=0.1)
        m.adapter.linear.bias.normal_(std=0.1)
    A, b = m.adapter.affine()
    proj = Projection.identity(48).then(A, b, m.selection(16))
    with torch.no_grad():
        ref = m.forward_eval(torch.as_tensor(X))[16].numpy()
    np.testing.assert_allclose(proj.raw(X), ref, atol=1e-5)


# ---------------------------------------------------------------- SMEC API
@pytest.mark.parametrize("method", ["smec", "mrl", "search-adaptor", "pca", "truncate"])
def test_fit_transform_shapes_and_norms(synth, method):
    smec = SMEC((24, 8), method, seed=0, **FAST).fit(synth)
    assert smec.dims_ == (24, 8) and smec.input_dim_ == 48
    for d in (24, 8, 48):
        Z = smec.transform(synth[:10], d)
        assert Z.dtype == np.float32 and Z.shape == (10, d)
        np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    assert not smec.supervised_
    np.testing.assert_allclose(smec.transform(synth[:10], 48), synth[:10], atol=1e-6)


@pytest.mark.parametrize("method", LEARNED)
def test_supervised_fit_adapts_full_vector(synth, synth_supervised, method):
    Q, pairs = synth_supervised
    smec = SMEC((16, 8), method, seed=0, **FAST).fit(synth, queries=Q, qrels=pairs)
    assert smec.supervised_
    assert smec.transform(Q, 16).shape == (80, 16)
    assert not np.allclose(smec.transform(synth[:5], 48), synth[:5], atol=1e-4)


def test_supervised_smec_chain_starts_with_the_full_dim_stage_alone(synth, synth_supervised):
    """With labels SMRL runs D -> D alone, frozen, then D -> d1 -> d2: one output per stage, and the adapted full
    vector does not depend on which smaller dims are asked for (it is trained before any of them)."""
    Q, pairs = synth_supervised
    two = SMEC((16, 8), "smec", seed=0, **FAST).fit(synth, queries=Q, qrels=pairs)
    assert [r["out_dims"] for r in two.reports_] == [[48], [16], [8]]
    one = SMEC((16,), "smec", seed=0, **FAST).fit(synth, queries=Q, qrels=pairs)
    np.testing.assert_array_equal(one.transform(synth, 48), two.transform(synth, 48))
    np.testing.assert_array_equal(one.transform(synth, 16), two.transform(synth, 16))
    unsup = SMEC((16, 8), "smec", seed=0, **FAST).fit(synth)
    assert [r["out_dims"] for r in unsup.reports_] == [[16], [8]]


def test_supervised_stages_also_compete_with_a_stage_trained_from_the_raw_vector(synth, synth_supervised, monkeypatch):
    """With labels the chain is rooted at the adapted full vector, and every reduced stage also trains one
    straight from the raw vector (identity input), so a chain that lost what it needs is not kept; by default
    no stage learns a dimension selection."""
    from smec_index.compressor import api

    seen = []
    original = api._Trainer._trained

    def spy(self, proj_in, src, d, *args, **kwargs):
        seen.append((src, d, api._is_identity(proj_in)))
        return original(self, proj_in, src, d, *args, **kwargs)

    monkeypatch.setattr(api._Trainer, "_trained", spy)
    Q, pairs = synth_supervised
    smec = SMEC((16, 8), "smec", seed=0, **FAST).fit(synth, queries=Q, qrels=pairs)
    assert not np.allclose(smec.projections_[48].M, np.eye(48), atol=1e-4)  # the adapted vector is the root
    assert sorted(d for src, d, raw in seen if src == 48 and raw) == [8, 16]
    assert any(src == 48 and not raw for src, d, raw in seen)  # the chain's first stage: from the adapted vector
    for r in smec.reports_[1:]:
        assert {"trained", "unsupervised", "from-full", "pca-input", "pca-full"} <= set(r["candidates"])
    assert smec.selections_ == {}  # ads=None learns no selection, with labels too
    assert SMEC((16, 8), "smec", seed=0, ads=True, **FAST).fit(synth, queries=Q, qrels=pairs).selections_


def test_supervised_fit_ranks_neighbours_on_the_sample_and_learns_positives_from_the_whole_corpus(
        synth, synth_supervised, monkeypatch):
    """With labels above ``max_train_rows`` the similarity loss, its neighbour ranking and the unsupervised
    held-out rows stay inside the unsupervised fit's seeded sample; the rank loss still trains on judged
    documents outside it, and every corpus row is projected for the held-out queries' ranking."""
    from smec_index.compressor import train as train_mod

    Q, pairs = synth_supervised
    cap = 250
    keep = set(SMEC((16, 8), seed=5, max_train_rows=cap).training_rows(synth.shape[0]).tolist())
    outside = {d for _, d, _ in pairs} - keep
    assert outside  # the fixture judges rows the sample misses
    seen_rows: list[set] = []
    batch_docs: set = set()
    real_batch = train_mod._query_batch

    evals: list = []

    def spy(data, qs, cfg, rng):
        seen_rows.append(set(data.train_rows.tolist()) | set(data.val_rows.tolist()))
        evals.append((data.eval_rows, {r for q in data.val_q for r, _ in data.positives[q]}))
        out = real_batch(data, qs, cfg, rng)
        batch_docs.update(out[0][out[2]].tolist())
        return out

    monkeypatch.setattr(train_mod, "_query_batch", spy)
    smec = SMEC((16, 8), "smec", seed=5, **FAST, max_train_rows=cap).fit(synth, queries=Q, qrels=pairs)
    assert seen_rows and all(rows <= keep for rows in seen_rows)
    assert len(seen_rows[0]) == cap
    assert batch_docs & outside
    # held-out queries rank the sample plus their own judged and mined documents, not the whole corpus
    for eval_rows, judged in evals:
        assert keep <= set(eval_rows.tolist()) and judged <= set(eval_rows.tolist())
        assert len(eval_rows) < synth.shape[0] and np.all(np.diff(eval_rows) > 0)
    assert smec.supervised_ and smec.transform(synth, 8).shape == (600, 8)


def test_seed_makes_training_reproducible(synth):
    a = SMEC((16, 8), seed=3, **FAST).fit(synth).transform(synth[:20], 8)
    b = SMEC((16, 8), seed=3, **FAST).fit(synth).transform(synth[:20], 8)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["mrl", "search-adaptor"])
def test_in_batch_pairs_reproduce_a_fit_on_two_threads(monkeypatch, synth, method):
    """In-batch neighbours (eq. 4) repeat rows; their gradients are summed in index order (on two threads
    indexing's backward summed them in an order that changed run to run, and so did the fit)."""
    from smec_index._threads import ENV_THREADS

    monkeypatch.setenv(ENV_THREADS, "2")
    # batches of 256 anchors x 10 pairs x 32 dims: large enough that the sum runs on both threads
    opts = {**FAST, "batch_size": 256, "max_epochs": 2}
    fits = [SMEC((32, 16), method, seed=3, **opts).fit(synth).transform(synth[:50], 32) for _ in range(3)]
    for other in fits[1:]:
        np.testing.assert_array_equal(fits[0], other)


def test_unsupervised_fit_trains_on_a_seeded_sample_of_a_large_corpus(synth):
    """Above ``max_train_rows`` the corpus is sampled (seeded) before training: same result as fitting the sample."""
    capped = SMEC((16, 8), seed=5, **FAST, max_train_rows=250).fit(synth)
    keep = np.sort(np.random.default_rng(5).choice(synth.shape[0], 250, replace=False))
    np.testing.assert_array_equal(SMEC((16, 8), seed=5, max_train_rows=250).training_rows(synth.shape[0]), keep)
    assert SMEC((16, 8), seed=5, max_train_rows=600).training_rows(600) is None
    on_sample = SMEC((16, 8), seed=5, **FAST).fit(synth[keep])
    for d in (16, 8):
        np.testing.assert_array_equal(capped.transform(synth, d), on_sample.transform(synth, d))
    full = SMEC((16, 8), seed=5, **FAST).fit(synth)
    assert not np.array_equal(full.transform(synth, 8), capped.transform(synth, 8))
    # extend with a corpus trains on the same kind of sample
    capped.extend(4, corpus=synth)
    on_sample.extend(4, corpus=synth[keep])
    np.testing.assert_array_equal(capped.transform(synth, 4), on_sample.transform(synth, 4))


def test_smec_stages_are_frozen_and_extend_keeps_them_bit_identical(synth):
    smec = SMEC((24, 12), seed=0, **FAST).fit(synth)
    before = {d: smec.transform(synth, d) for d in (24, 12)}
    sel = smec.selected_dims(12)
    smec.extend(6)
    assert smec.dims_ == (24, 12, 6)
    for d, Z in before.items():
        np.testing.assert_array_equal(smec.transform(synth, d), Z)
    np.testing.assert_array_equal(smec.selected_dims(12), sel)
    assert smec.transform(synth[:3], 6).shape == (3, 6)


def test_later_stage_is_computed_from_the_frozen_earlier_stage(synth):
    """A 1-stage model and a 2-stage model with the same seed share the first stage bit for bit."""
    one = SMEC((24,), seed=0, **FAST).fit(synth)
    two = SMEC((24, 12), seed=0, **FAST).fit(synth)
    np.testing.assert_array_equal(one.transform(synth, 24), two.transform(synth, 24))


def test_selected_dims_of_ads_stage(synth):
    smec = SMEC((24, 12), seed=0, **FAST).fit(synth)
    for d, n_in in ((24, 48), (12, 24)):
        idx = smec.selected_dims(d)
        assert len(idx) == d == len(set(idx.tolist())) and idx.max() < n_in
    np.testing.assert_array_equal(SMEC((24,), "mrl", **FAST).fit(synth).selected_dims(24), np.arange(24))


@pytest.mark.parametrize("method", ["smec", "pca", "search-adaptor"])
def test_save_load_round_trip_is_exact(tmp_path, synth, method):
    smec = SMEC((24, 8), method, seed=0, **FAST).fit(synth)
    smec.save(tmp_path / "m")
    back = SMEC.load(tmp_path / "m")
    assert back.dims_ == smec.dims_ and back.method == method and back.supervised_ == smec.supervised_
    for d in (24, 8, 48):
        np.testing.assert_array_equal(back.transform(synth, d), smec.transform(synth, d))
        np.testing.assert_array_equal(back.selected_dims(d), smec.selected_dims(d))
    back.extend(4, corpus=synth)
    np.testing.assert_array_equal(back.transform(synth, 8), smec.transform(synth, 8))


def test_save_replaces_atomically_and_load_checks_version(tmp_path, synth):
    path = tmp_path / "m"
    SMEC((8,), "pca").fit(synth).save(path)
    SMEC((16, 4), "truncate").fit(synth).save(path)
    assert SMEC.load(path).dims_ == (16, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp directory left behind
    cfg = json.loads((path / "config.json").read_text())
    cfg["format_version"] = 99
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="truncated or replaced"):  # the manifest's size and sha256
        SMEC.load(path)
    (path / "manifest.json").unlink()
    write_manifest(path, "smec_index.SMEC", FORMAT_VERSION, {})  # re-sealed: the version itself is refused
    with pytest.raises(ValueError, match="format version 99"):
        SMEC.load(path)
    with pytest.raises(ValueError, match="not a saved SMEC"):
        SMEC.load(tmp_path / "nothing")


def test_load_refuses_damaged_weights(tmp_path, synth):
    path = tmp_path / "m"
    SMEC((8,), "pca").fit(synth).save(path)
    w = path / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or replaced"):
        SMEC.load(path)


def test_failed_save_keeps_previous(tmp_path, synth, monkeypatch):
    path = tmp_path / "m"
    SMEC((8,), "pca").fit(synth).save(path)
    import safetensors.numpy

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        SMEC((16,), "pca").fit(synth).save(path)
    assert SMEC.load(path).dims_ == (8,)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "dims,exc,msg",
    [
        ((32, 64), ValueError, "strictly decreasing"),
        ((32, 32), ValueError, "strictly decreasing"),
        ((), ValueError, "empty"),
        ((16, 0), ValueError, "positive"),
        ((16.0,), TypeError, "ints"),
        ("abc", TypeError, "ints"),
    ],
)
def test_bad_dims(dims, exc, msg):
    with pytest.raises(exc, match=msg):
        SMEC(dims)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="method must be one of"):
        SMEC((8,), "lda")
    with pytest.raises(ValueError, match="only apply to method='smec'"):
        SMEC((8,), "mrl", ads=True)
    with pytest.raises(TypeError, match="unknown option"):
        SMEC((8,), learning_rate=0.1)
    with pytest.raises(ValueError, match="device must be None .* got 'gpu0'"):
        SMEC((8,), device="gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_cuda_asked_for_without_cuda_fails_clearly_before_fitting(synth):
    smec = SMEC((16, 8), device="cuda", **FAST)
    with pytest.raises(ValueError, match="device='cuda' but CUDA is not available"):
        smec.fit(synth)
    assert not smec.is_fitted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("supervised", [False, True])
def test_cuda_is_the_default_when_present_and_trains_as_well_as_the_cpu(synth, synth_supervised, supervised):
    """Float rounding differs between devices (and can move early stopping by an epoch), so the check is
    on what the projection does: the neighbours it keeps, within a few points of the CPU fit's."""
    Q, pairs = synth_supervised
    args = (synth, Q, pairs) if supervised else (synth,)
    gpu = SMEC((16, 8), seed=0, **FAST).fit(*args)
    cpu = SMEC((16, 8), seed=0, device="cpu", **FAST).fit(*args)
    assert gpu._device().type == "cuda"
    exact = np.argsort(-(synth[:100] @ synth.T), axis=1)[:, 1:11]
    for d in (16, 8):
        recall = {}
        for name, model in (("gpu", gpu), ("cpu", cpu)):
            Z = model.transform(synth, d)
            assert np.isfinite(Z).all() and np.allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
            got = np.argsort(-(Z[:100] @ Z.T), axis=1)[:, 1:11]
            recall[name] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
        assert recall["gpu"] >= recall["cpu"] - 0.05, (d, recall)


def test_bad_fit_input_leaves_object_untouched(synth, synth_supervised):
    Q, pairs = synth_supervised
    smec = SMEC((16, 8), "pca")
    cases = [
        (dict(corpus=synth[:, :10]), ValueError, "must all be < the corpus dim 10"),
        (dict(corpus=synth[0]), ValueError, "shape \\(48,\\); expected \\(n, D\\)"),
        (dict(corpus=synth[:0]), ValueError, "empty"),
        (dict(corpus=synth.astype(np.int32)), TypeError, "floating dtype"),
        (dict(corpus=synth.tolist()), TypeError, "numpy array"),
        (dict(corpus=np.where(np.arange(48) == 3, np.nan, synth)), ValueError, "NaN or inf"),
        (dict(corpus=synth, queries=Q), ValueError, "queries without qrels train smec's listwise distillation"),
        (dict(corpus=synth, qrels=pairs), ValueError, "qrels without queries"),
        (dict(corpus=synth, queries=Q[:, :20], qrels=pairs), ValueError, "expected \\(n, 48\\)"),
        (dict(corpus=synth, queries=Q, qrels=[(0, 600, 1)]), ValueError, "doc_row 600 out of range"),
        (dict(corpus=synth, queries=Q, qrels=[(80, 0, 1)]), ValueError, "query_row 80 out of range"),
        (dict(corpus=synth, queries=Q, qrels=[(0, 1)]), ValueError, "expected \\(query_row, doc_row, relevance\\)"),
        (dict(corpus=synth, queries=Q, qrels=[(0, 1, 0)]), ValueError, "no pair with relevance > 0"),
        (dict(corpus=synth, queries=Q, qrels=[(0.5, 1, 1)]), TypeError, "must be integers"),
    ]
    for kwargs, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            smec.fit(**kwargs)
        assert not smec.is_fitted
    smec.fit(synth)
    before = smec.transform(synth, 8)
    with pytest.raises(ValueError, match="corpus dim 4"):
        smec.fit(synth[:, :4])
    np.testing.assert_array_equal(smec.transform(synth, 8), before)


def test_bad_transform_and_extend_input(synth):
    smec = SMEC((16, 8), seed=0, **FAST)
    with pytest.raises(NotFittedError, match="not fitted"):
        smec.transform(synth, 8)
    smec.fit(synth)
    with pytest.raises(ValueError, match="dim 12 is not trained"):
        smec.transform(synth, 12)
    with pytest.raises(ValueError, match="expected \\(n, 48\\)"):
        smec.transform(synth[:, :10], 8)
    with pytest.raises(TypeError, match="dim must be an int"):
        smec.transform(synth, "8")
    with pytest.raises(ValueError, match="NaN or inf"):
        smec.transform(np.full((2, 48), np.inf, dtype=np.float32), 8)
    with pytest.raises(ValueError, match="already trained"):
        smec.extend(8)
    with pytest.raises(ValueError, match="in 1..47"):
        smec.extend(48)
    with pytest.raises(ValueError, match="jointly trained"):
        SMEC((16,), "mrl", **FAST).fit(synth).extend(8)
    assert smec.dims_ == (16, 8)


def test_load_then_extend_needs_corpus(tmp_path, synth):
    SMEC((16,), seed=0, **FAST).fit(synth).save(tmp_path / "m")
    with pytest.raises(ValueError, match="pass corpus="):
        SMEC.load(tmp_path / "m").extend(8)


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_unsupervised_smec_beats_truncation_at_64_on_scifact(scifact_minilm):
    ds = scifact_minilm
    Q, qids, qrels = ds.split_queries("test")
    scores = {}
    for method in ("smec", "truncate"):
        smec = SMEC((64,), method, seed=0, progress=False, max_epochs=10).fit(ds.corpus)
        r = evaluate_embeddings(smec.transform(Q, 64), smec.transform(ds.corpus, 64), qids, ds.doc_ids, qrels)
        scores[method] = r["ndcg@10"]
    assert scores["truncate"] == pytest.approx(0.4841, abs=1e-3)
    assert scores["smec"] > scores["truncate"] + 0.03, scores


def test_ads_finds_the_informative_dimensions():
    """The structure lives in the last 8 of 32 coordinates; the prefix holds low-variance noise.
    ADS starts from the prefix and must move its selection onto the informative coordinates."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 8))
    X = np.concatenate(
        [rng.normal(scale=0.1, size=(800, 24)), centres[rng.integers(0, 12, 800)] + rng.normal(scale=0.3, size=(800, 8))],
        axis=1,
    ).astype(np.float32)
    from smec_index.compressor.train import TrainConfig, TrainData, train_stage

    X /= np.linalg.norm(X, axis=1, keepdims=True)
    T = torch.as_tensor(X)
    data = TrainData(teacher=T, inputs=T, train_rows=np.arange(700), val_rows=np.arange(700, 800))
    model = StageModel(32, (8,), True, torch.linspace(1.0, -1.0, 32))
    train_stage(model, data, TrainConfig(max_epochs=1, ads_epochs=20, batch_size=128, xbm=False), seed=0)
    hits = np.isin(model.selection(8), np.arange(24, 32)).sum()
    assert hits >= 6, model.selection(8)


def test_pca_init_without_training_is_exactly_pca(synth):
    """init='pca' starts each stage's adapter at the principal axes of its input: with no adapter
    epochs and prefix selection, the first stage is PCA itself."""
    smec = SMEC((16,), "smec", ads=False, xbm=False, init="pca", max_epochs=0, progress=False).fit(synth)
    pca = SMEC((16,), "pca").fit(synth)
    Z, P = smec.transform(synth, 16), pca.transform(synth, 16)
    np.testing.assert_allclose(np.abs((Z * P).sum(axis=1)), 1.0, atol=1e-4)


def test_auto_init_is_pca_and_ads_is_off_with_and_without_labels(synth, synth_supervised):
    Q, pairs = synth_supervised
    kw = dict(seed=0, **FAST)
    for args in [(), (Q, pairs)]:
        auto = SMEC((16,), **kw).fit(synth, *args)
        pca = SMEC((16,), init="pca", ads=False, **kw).fit(synth, *args)
        ident = SMEC((16,), init="identity", ads=False, **kw).fit(synth, *args)
        np.testing.assert_array_equal(auto.transform(synth, 16), pca.transform(synth, 16))
        assert not np.array_equal(auto.transform(synth, 16), ident.transform(synth, 16))
    assert SMEC((16,)).ads is None and SMEC((16,), ads=True).ads is True


@pytest.mark.parametrize("n", [2, 5, 11])
@pytest.mark.parametrize("method", LEARNED)
def test_tiny_corpora_fit_or_fail_clearly(n, method):
    """A handful of rows trains (uselessly, but without a torch error); one row is refused by name."""
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 24)).astype(np.float32)
    smec = SMEC((8, 4), method, seed=0, **FAST).fit(X)
    assert np.isfinite(smec.transform(X, 4)).all()
    with pytest.raises(ValueError, match="corpus has 1 row"):
        SMEC((8, 4), method, seed=0, **FAST).fit(X[:1])


@pytest.mark.parametrize("epoch_rows,steps", [(128, 2), (100, 2), (8192, 8)])
def test_an_unsupervised_epoch_is_at_most_epoch_rows_anchors(synth, epoch_rows, steps):
    """Large corpora are validated every ``epoch_rows`` anchors, not once per pass (bounded epochs)."""
    from smec_index.compressor.train import TrainConfig, TrainData, _Stepper

    X = torch.as_tensor(synth)
    data = TrainData(teacher=X, inputs=X, train_rows=np.arange(500), val_rows=np.arange(500, 600))
    cfg = TrainConfig(batch_size=64, epoch_rows=epoch_rows, xbm=False)
    stepper = _Stepper(StageModel(48, (16,), False), data, cfg, np.random.default_rng(0), torch.Generator())
    assert stepper.n_steps == steps


def test_listwise_distillation_is_zero_at_the_teacher_and_ranks_not_values():
    """The kl loss vanishes when the student orders and spaces the candidates as the teacher does, whatever their
    absolute cosines at a shared offset, and grows when the student swaps two of them."""
    torch.manual_seed(0)
    loss = ListwiseDistillationLoss(temperature=0.1)
    za = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    zc = torch.nn.functional.normalize(torch.randn(4, 6, 8), dim=-1)
    student = torch.einsum("bd,bkd->bk", za, zc)
    assert loss(student, za, zc).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(student + 0.3, za, zc).item() == pytest.approx(0.0, abs=1e-6)  # softmax ignores a shared offset
    swapped = student.clone()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    assert loss(swapped, za, zc).item() > 1e-3 or torch.allclose(swapped, student)
    l1 = SimilarityPreservationLoss()
    assert l1(student + 0.3, za, zc).item() == pytest.approx(0.3, abs=1e-5)  # eq. 7 counts the offset


@pytest.mark.parametrize("make", [SimilarityPreservationLoss, lambda: ListwiseDistillationLoss(0.1)])
def test_losses_take_candidates_as_distinct_rows_and_an_index(make):
    """Candidates given as (distinct rows, index) are the gathered (B, K, d) ones: the same loss value and
    the same gradient to float rounding, summed over every draw of a row."""
    torch.manual_seed(0)
    loss = make()
    rows = torch.randn(7, 5, requires_grad=True)
    za = torch.randn(3, 5, requires_grad=True)
    index = torch.tensor([0, 3, 3, 6, 1, 0, 2, 2, 2, 5, 4, 0])  # 3 anchors x 4 candidates, rows repeated
    teacher = torch.rand(3, 4)
    gathered = loss(teacher, za, rows[index].reshape(3, 4, 5))
    g_rows, g_za = torch.autograd.grad(gathered, (rows, za))
    by_index = loss(teacher, za, rows, index=index)
    i_rows, i_za = torch.autograd.grad(by_index, (rows, za))
    assert torch.equal(gathered, by_index)
    torch.testing.assert_close(i_rows, g_rows)
    torch.testing.assert_close(i_za, g_za)
    assert float(g_rows[3].abs().sum()) > 0  # a row drawn twice gets both draws' gradient


def test_kl_candidates_are_each_anchors_nearest_training_rows_then_random_ones(synth):
    from smec_index.compressor.train import TrainConfig, TrainData, _Stepper

    X = torch.as_tensor(synth)
    train = np.arange(0, 500, dtype=np.int64)
    data = TrainData(teacher=X, inputs=X, train_rows=train, val_rows=np.arange(500, 600))
    cfg = TrainConfig(sp_loss="kl", kl_neighbours=5, kl_random=3, batch_size=64)
    stepper = _Stepper(StageModel(48, (16,), False), data, cfg, np.random.default_rng(0), torch.Generator().manual_seed(0))
    rows = torch.as_tensor([3, 17, 400])
    ids, sims = stepper._kl_candidates(rows)
    assert ids.shape == sims.shape == (3, 8)
    S = synth[rows.numpy()] @ synth[train].T
    S[np.arange(3), rows.numpy()] = -np.inf  # not itself
    np.testing.assert_array_equal(np.sort(ids[:, :5].numpy(), axis=1), np.sort(train[np.argsort(-S, axis=1)[:, :5]], axis=1))
    assert np.isin(ids[:, 5:].numpy(), train).all()
    expected = np.einsum("bd,bkd->bk", synth[rows.numpy()], synth[ids.numpy()])
    np.testing.assert_allclose(sims.numpy(), expected, atol=1e-5)


def test_distillation_lists_come_from_a_longer_list_of_the_same_teacher_without_ranking_again(synth, monkeypatch):
    """A labelled fit trains S-XBM stages (long neighbour lists) and distilled ones (the 50 nearest) against one
    teacher: the short list is the long one's head, identical to ranking it alone, and not ranked again."""
    from smec_index.compressor import train as train_mod
    from smec_index.compressor.train import TrainConfig, TrainData

    X = torch.as_tensor(synth)
    calls: list[int] = []
    real = train_mod.teacher_neighbours

    def counting(teacher, rows, n_cand, chunk=1024):
        calls.append(n_cand)
        return real(teacher, rows, n_cand, chunk)

    monkeypatch.setattr(train_mod, "teacher_neighbours", counting)
    fresh = TrainData(teacher=X, inputs=X, train_rows=np.arange(500), val_rows=np.arange(500, 600))
    alone = fresh.neighbour_lists(TrainConfig(sp_loss="kl", kl_neighbours=7))
    data = TrainData(teacher=X, inputs=X, train_rows=np.arange(500), val_rows=np.arange(500, 600))
    data.neighbour_lists(TrainConfig(sp_loss="l1", neighbour_pool=30, memory_size=5000))
    assert calls == [7, 30]
    ids, sims = data.neighbour_lists(TrainConfig(sp_loss="kl", kl_neighbours=7))
    assert calls == [7, 30]
    np.testing.assert_array_equal(ids.numpy(), alone[0].numpy())
    np.testing.assert_allclose(sims.numpy(), alone[1].numpy())


def test_without_labels_smec_distills_and_the_baselines_and_labelled_fits_keep_eq7(synth, synth_supervised,
                                                                                  monkeypatch):
    """``sp_loss="auto"``: listwise distillation (with its own lr, batch and epoch unless given) for unsupervised
    smec and, in a fit with labels, for smec's stage trained without them (so that labels which do not help fall
    back to what the unsupervised fit gives); the paper's eq. 7 for mrl, search-adaptor and every training with
    the rank loss; an explicit choice is kept everywhere."""
    from smec_index.compressor.train import KL_DEFAULTS

    seen: list = []
    real = api.train_stage

    def spy(model, data, cfg, seed, progress=False, desc="stage"):
        # a distilled stage starts at the un-centred x R (no bias), an eq. 7 one at the centred (x - mu) R
        uncentred = float(model.adapter.linear.bias.detach().abs().max()) == 0.0
        assert uncentred == (cfg.sp_loss == "kl"), desc
        seen.append(("no labels" in desc, (cfg.sp_loss, cfg.lr, cfg.batch_size, cfg.epoch_rows)))
        return real(model, data, cfg, seed, progress, desc)

    monkeypatch.setattr(api, "train_stage", spy)
    Q, pairs = synth_supervised
    kw = {**FAST, "max_epochs": 1}
    # FAST sets batch_size=64: given, so it stays
    kl = ("kl", KL_DEFAULTS["lr"], 64, KL_DEFAULTS["epoch_rows"])
    l1 = ("l1", 2e-3, 64, 32768)
    cases = [(dict(), (), {(False, kl)}),
             (dict(lr=5e-4), (), {(False, ("kl", 5e-4, 64, KL_DEFAULTS["epoch_rows"]))}),
             (dict(sp_loss="l1"), (), {(False, l1)}),
             (dict(), (Q, pairs), {(False, l1), (True, kl)}),
             (dict(sp_loss="l1"), (Q, pairs), {(False, l1), (True, l1)}),
             (dict(sp_loss="kl"), (Q, pairs), {(False, kl), (True, kl)}),
             (dict(method="mrl"), (), {(False, l1)}),
             (dict(method="mrl"), (Q, pairs), {(False, l1)}),
             (dict(method="search-adaptor"), (), {(False, l1)})]
    for options, args, expected in cases:
        seen.clear()
        options = dict(options)
        method = options.pop("method", "smec")
        SMEC((16, 8), method, seed=0, **kw, **options).fit(synth, *args)
        assert seen and set(seen) == expected, (options, method, set(seen))
    with pytest.raises(ValueError, match="sp_loss must be one of"):
        SMEC((16,), sp_loss="mse")


def test_a_distilled_stage_starts_exactly_at_its_pca_input_candidate_and_eq7_at_the_centred_map(synth,
                                                                                                synth_supervised):
    """With listwise distillation the trained map starts where its un-centred PCA candidate is, so with no
    training they score the same (the centred start scored below that candidate on held-out rows before any
    step), in a fit with labels too (its stage trained without them); eq. 7 fits (here mrl) keep the centred
    start they were measured with."""
    smec = SMEC((16, 8), seed=0, **{**FAST, "max_epochs": 0}).fit(synth)
    for report in smec.reports_:
        assert report["candidates"]["trained"] == pytest.approx(report["candidates"]["pca-input"], abs=1e-9)
    labelled = SMEC((16, 8), seed=0, **{**FAST, "max_epochs": 0}).fit(synth, *synth_supervised)
    stages = [r for r in labelled.reports_ if "unsupervised" in r["candidates"]]
    assert len(stages) == 2
    for report in stages:
        assert report["candidates"]["unsupervised"] == pytest.approx(report["candidates"]["pca-input"], abs=1e-9)
    pca = SMEC((16,), "pca").fit(synth).transform(synth, 16)
    np.testing.assert_allclose(SMEC((16,), seed=0, **{**FAST, "max_epochs": 0}).fit(synth).transform(synth, 16), pca,
                               atol=1e-5)
    mrl = SMEC((16,), "mrl", seed=0, **{**FAST, "max_epochs": 0}).fit(synth).transform(synth, 16)
    centred = synth - synth.mean(axis=0)
    _, _, Vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ Vt[:16].T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    # scores (Gram matrices) do not see the output rotation: mrl ranks as centred PCA does, not as the un-centred
    np.testing.assert_allclose(mrl[:50] @ mrl[:50].T, expected[:50] @ expected[:50].T, atol=1e-4)
    assert np.abs(mrl[:50] @ mrl[:50].T - pca[:50] @ pca[:50].T).max() > 0.05


@pytest.mark.parametrize("supervised", [False, True])
def test_the_kl_loss_trains_a_stage_that_beats_its_start(synth, synth_supervised, supervised):
    """From a start that keeps the wrong coordinates (identity init, variance in the last ones), listwise
    distillation alone (and beside the rank loss) lifts the held-out score (without labels mixed rows' recall,
    which climbs more slowly than held-out rows' did: 12 epochs)."""
    X = np.ascontiguousarray(synth[:, ::-1])
    Q, pairs = synth_supervised
    args = (np.ascontiguousarray(Q[:, ::-1]), pairs) if supervised else ()
    epochs = 6 if supervised else 12
    smec = SMEC((8,), init="identity", ads=False, seed=0, sp_loss="kl",
                **{**FAST, "max_epochs": epochs, "patience": epochs}).fit(X, *args)
    report = smec.reports_[-1]
    assert max(report["val"]) > report["val"][0] + 0.05, report["val"]
    assert np.isfinite(smec.transform(X, 8)).all()


def test_adapt_phase_keeps_its_own_best_epoch_even_below_the_select_phase(synth, monkeypatch):
    """The select phase scores the selection with the adapter at its start; the adapt phase keeps its best epoch
    even when that score is never beaten (a tie on a small held-out slice threw the trained adapter away)."""
    from smec_index.compressor import train as train_mod
    from smec_index.compressor.train import TrainConfig, TrainData, train_stage

    X = torch.as_tensor(synth)
    data = TrainData(teacher=X, inputs=X, train_rows=np.arange(500), val_rows=np.arange(500, 600))
    # initial, 2 select epochs (best 0.9), then adapt epochs peaking at 0.8 on the second
    scores = iter([0.5, 0.9, 0.6, 0.7, 0.8, 0.75, 0.74, 0.73])
    monkeypatch.setattr(train_mod, "_validate", lambda model, data: next(scores))
    model = StageModel(48, (16,), True, torch.linspace(1.0, -1.0, 48))
    cfg = TrainConfig(max_epochs=10, ads_epochs=2, patience=3, batch_size=64, xbm=False)
    report = train_stage(model, data, cfg, seed=0)
    assert report.epochs == 2 + 5 and report.best_epoch == 2 + 2
    assert model.adapter.linear.weight.abs().sum() > 0  # the trained adapter, not the one the select phase held


def test_held_out_queries_are_a_random_share_of_the_labelled_queries():
    """Held-out queries are drawn at random, so where judged documents recur they hit training positives as new
    queries from the same distribution do, and the held-out score sees what labels teach about those documents."""
    from smec_index.compressor.api import _split_queries

    rng = np.random.default_rng(0)
    # 300 queries over 120 documents: many documents are judged for several queries
    positives = {q: [(int(d), 1.0) for d in rng.choice(120, 1 + q % 2, replace=False)] for q in range(300)}
    train, val = _split_queries(positives, 0.1, np.random.default_rng(1))
    assert len(val) == 30 and len(train) == 270 and not set(train) & set(val)
    assert sorted(set(train) | set(val)) == list(range(300))
    assert list(val) == sorted(val) and list(train) == sorted(train)
    train_docs = {d for q in train for d, _ in positives[q]}
    assert {d for q in val for d, _ in positives[q]} & train_docs  # not split by shared documents
    again = _split_queries(positives, 0.1, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again))
    assert not np.array_equal(val, _split_queries(positives, 0.1, np.random.default_rng(2))[1])
    # only labelled queries are split (query 0 has no positive here)
    some = {q: [(q, 1.0)] for q in range(1, 41)}
    t, v = _split_queries(some, 0.25, np.random.default_rng(1))
    assert len(v) == 10 and sorted(set(t) | set(v)) == list(range(1, 41))
    # too few labelled queries to hold any out: both sides are every query
    few = {q: [(q, 1.0)] for q in range(10)}
    t, v = _split_queries(few, 0.1, np.random.default_rng(1))
    assert list(t) == list(v) == list(range(10))
    # at most max_val held out; below the cap the split is the same
    t, v = _split_queries(positives, 0.1, np.random.default_rng(1), max_val=12)
    assert len(v) == 12 and len(t) == 288 and not set(t) & set(v)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), _split_queries(positives, 0.1,
                                                                                 np.random.default_rng(1), 30)))


def test_memory_bounds_of_mining_and_held_out_ranks_leave_the_results_unchanged(synth, synth_supervised,
                                                                                monkeypatch):
    """Hard negatives are mined, and held-out queries' ranks counted, a block of queries at a time when the
    whole would not fit the byte caps: same pools, same scores."""
    from smec_index.compressor import train as train_mod

    Q, pairs = synth_supervised
    smec = SMEC((16, 8), "smec", seed=0, **FAST)
    whole = api._Trainer(smec, synth, Q, pairs)
    monkeypatch.setattr(api, "MINE_BYTES", 4 * synth.shape[0] * 7)  # 7 queries a block
    blocks = api._Trainer(smec, synth, Q, pairs)
    np.testing.assert_array_equal(whole.sup["neg_pool"], blocks.sup["neg_pool"])
    exact = torch.topk(torch.as_tensor(Q) @ torch.as_tensor(synth).T, whole.sup["neg_pool"].shape[1], dim=1)
    np.testing.assert_array_equal(whole.sup["neg_pool"], exact.indices.numpy())
    proj = api.Projection.identity(48)
    one = whole._score(proj, 48)
    monkeypatch.setattr(train_mod, "RANK_BYTES", 1)  # one query a block
    np.testing.assert_array_equal(one, whole._score(proj, 48))
    assert len(one) == len(whole.sup["val_q"]) > 1


def test_ranks_above_count_the_strictly_higher_scores_of_each_query(monkeypatch):
    """The held-out ranks: how many of a query's scores beat each judged score, ties not counted, whatever the
    block size (rounded scores make ties between judged and unjudged rows and between judged ones)."""
    from smec_index.compressor import train as train_mod

    g = torch.Generator().manual_seed(0)
    sims = torch.round(torch.randn(9, 300, generator=g) * 4) / 4
    pos = sims.gather(1, torch.randint(0, 300, (9, 5), generator=g))
    pos[:, 4] = pos[:, 1]
    brute = (sims.unsqueeze(1) > pos.unsqueeze(2)).sum(2)
    assert torch.equal(train_mod._ranks_above(sims, pos), brute)
    monkeypatch.setattr(train_mod, "RANK_BYTES", 1)  # one query a block
    assert torch.equal(train_mod._ranks_above(sims, pos), brute)


def test_a_stage_worse_than_pca_on_held_out_rows_is_replaced_by_pca(synth):
    """A stage that cannot learn (lr 0, identity start: truncation) on data whose variance sits in the last
    coordinates loses to PCA of its input on the held-out rows; the fit keeps PCA and says so."""
    X = np.ascontiguousarray(synth[:, ::-1])
    smec = SMEC((8,), "smec", init="identity", ads=False, seed=0, **{**FAST, "lr": 0.0}).fit(X)
    report = smec.reports_[-1]
    assert report["choice"] == "pca-input"
    assert report["candidates"]["pca-input"] > report["candidates"]["trained"]
    pca = SMEC((8,), "pca").fit(X)
    np.testing.assert_allclose(np.abs((smec.transform(X, 8) * pca.transform(X, 8)).sum(axis=1)), 1.0, atol=1e-4)
    np.testing.assert_array_equal(smec.selected_dims(8), np.arange(8))


@pytest.mark.parametrize("supervised", [False, True])
def test_every_stage_keeps_the_candidate_with_the_best_held_out_score(synth, synth_supervised, supervised):
    Q, pairs = synth_supervised
    args = (Q, pairs) if supervised else ()
    smec = SMEC((16, 8), "smec", seed=0, **FAST).fit(synth, *args)
    if supervised:  # every reduced stage also trains from the raw vector, and without labels
        every = {"trained", "from-full", "unsupervised", "pca-input", "pca-full"}
        expected = [{"trained", "raw"}, every, every]
    else:
        expected = [{"trained", "pca-input"}, {"trained", "from-full", "pca-input", "pca-full"}]
    assert [set(r["candidates"]) for r in smec.reports_] == expected
    for r in smec.reports_:
        if supervised:  # within one standard error of the best (the rule's own test is below)
            assert r["candidates"][r["choice"]] >= max(r["candidates"].values()) - r["tolerance"]
        else:
            assert r["candidates"][r["choice"]] == max(r["candidates"].values()) and r["tolerance"] == 0


@pytest.mark.parametrize("supervised", [False, True])
def test_with_labels_the_from_full_candidate_trains_as_search_adaptor_does(synth, synth_supervised, supervised,
                                                                          monkeypatch):
    """With labels, a stage's ``from-full`` candidate is the search-adaptor recipe (in-batch similarity pairs,
    no S-XBM); every other training of the fit, and ``from-full`` without labels, keeps the fit's S-XBM."""
    from smec_index.compressor import api

    seen: dict[str, bool] = {}
    real = api.train_stage

    def spy(model, data, cfg, seed, progress=False, desc="stage"):
        seen[desc] = cfg.xbm
        return real(model, data, cfg, seed, progress, desc)

    monkeypatch.setattr(api, "train_stage", spy)
    Q, pairs = synth_supervised
    SMEC((16, 8), "smec", seed=0, **FAST).fit(synth, *((Q, pairs) if supervised else ()))
    raw = {desc for desc in seen if desc.endswith("(raw)")}
    assert raw == ({"smec 48->16 (raw)", "smec 48->8 (raw)"} if supervised else {"smec 48->8 (raw)"})
    assert all(seen[desc] is (not supervised) for desc in raw)
    assert all(seen[desc] is True for desc in set(seen) - raw) and len(seen) > len(raw)


def test_with_labels_the_first_listed_candidate_within_one_standard_error_of_the_best_is_kept(monkeypatch):
    """Held-out queries cannot see what labels teach about the training documents, so with labels whose judged
    documents recur a candidate listed earlier (the trained chain first) is kept unless the best beats it by
    more than the standard error of their per-query difference; without labels, or with labels whose documents
    never recur, the best is kept."""
    from smec_index.compressor import api

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 400)
    noisy = base + rng.normal(0, 0.05, 400)  # same mean as base +- noise: not distinguishable
    per_item = {"trained": base, "from-full": noisy + 0.002, "pca-input": base + 0.05}

    def choose(sup, names, recurrence=0.5):
        trainer = api._Trainer.__new__(api._Trainer)
        trainer.sup = {"recurrence": recurrence} if sup else None
        trainer.unlabelled, trainer.mixed = None, False
        trainer.smec = SimpleNamespace(code=None)
        monkeypatch.setattr(api._Trainer, "_score", lambda self, proj, d: per_item[proj])
        report, projections = StageReport((8,)), {}
        trainer._choose(report, 8, {n: (n, None) for n in names}, projections, {})
        return report

    # from-full scores higher on average but not by more than its standard error: the chain is kept
    r = choose(True, ["trained", "from-full"])
    assert r.candidates["from-full"] > r.candidates["trained"] and r.choice == "trained" and r.tolerance > 0
    assert (r.rule, r.recurrence) == ("one-se", 0.5)
    r = choose(False, ["trained", "from-full"])
    assert (r.choice, r.rule, r.recurrence) == ("from-full", "best", None)
    # labels whose judged documents recur in fewer than RECURRENCE_MIN of the queries: the best mean is kept
    r = choose(True, ["trained", "from-full"], recurrence=api.RECURRENCE_MIN / 2)
    assert (r.choice, r.rule, r.tolerance) == ("from-full", "best", 0.0)
    # a clear winner (5 points on every query) is taken, with labels too
    r = choose(True, ["trained", "from-full", "pca-input"])
    assert r.choice == "pca-input" and r.tolerance == 0


def test_label_recurrence_is_the_share_of_queries_sharing_a_judged_document():
    from smec_index.compressor.api import label_recurrence

    assert label_recurrence({}) == 0.0
    assert label_recurrence({0: [(1, 1.0)], 1: [(2, 1.0)], 2: [(3, 1.0)]}) == 0.0  # one document a query
    # queries 0 and 1 share document 5; query 2 judges 5 twice (a duplicate pair is not a second query)
    shared = {0: [(5, 1.0), (6, 1.0)], 1: [(5, 2.0)], 2: [(7, 1.0), (7, 1.0)], 3: [(8, 1.0)]}
    assert label_recurrence(shared) == 0.5


def test_a_supervised_fit_records_its_selection_rule(synth, synth_supervised):
    """synth_supervised labels each query with its own row: nothing recurs, so every stage keeps its best."""
    Q, pairs = synth_supervised
    smec = SMEC((16, 8), "smec", seed=0, **FAST).fit(synth, Q, pairs)
    assert {(r["rule"], r["recurrence"]) for r in smec.reports_} == {("best", 0.0)}
    for r in smec.reports_:
        assert r["candidates"][r["choice"]] == max(r["candidates"].values()) and r["tolerance"] == 0
    # queries 0, 2, ..., 8 also judge the rows of queries 1, 3, ..., 9: 10 of 80 queries share a document
    again = pairs + [(i, pairs[i + 1][1], 1.0) for i in range(0, 10, 2)]
    smec = SMEC((16, 8), "smec", seed=0, **FAST).fit(synth, Q, again)
    assert {(r["rule"], r["recurrence"]) for r in smec.reports_} == {("one-se", 10 / 80)}


def test_neighbour_memory_sample_draws_uniformly_from_the_in_memory_top_pool():
    from smec_index.compressor.memory import NeighbourMemory, teacher_neighbours

    rng = np.random.default_rng(0)
    T = torch.as_tensor(rng.normal(size=(200, 8)).astype(np.float32))
    T = torch.nn.functional.normalize(T, dim=1)
    rows = torch.arange(200)
    ids, sims = teacher_neighbours(T, rows, 60)
    mem = NeighbourMemory(50, ids, sims, rows, 200)
    mem.enqueue(torch.as_tensor(rng.permutation(200)[:50]))
    q = torch.arange(10)
    top_ids, top_sims, top_valid = mem.topk(q, 20)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        got, got_sims, valid = mem.sample(q, 20, 5, gen)
        for i in range(10):
            allowed = dict(zip(top_ids[i][top_valid[i]].tolist(), top_sims[i][top_valid[i]].tolist()))
            picked = got[i][valid[i]].tolist()
            assert len(picked) == min(5, len(allowed)) == len(set(picked))
            assert all(p in allowed and abs(allowed[p] - s) < 1e-6 for p, s in zip(picked, got_sims[i][valid[i]].tolist()))
            seen |= {(i, p) for p in picked}
    # uniform over the pool: with 30 draws of 5 from up to 20, nearly every pooled row is drawn
    assert len(seen) >= 0.9 * int(top_valid.sum())


# ---------------------------------------------------------------- output rotation
@pytest.mark.parametrize("method", ["smec", "pca"])
def test_rotation_keeps_every_score_and_is_seeded(synth, method):
    opts = FAST if method == "smec" else {}
    plain = SMEC((16, 8), method, rotate=False, **opts).fit(synth)
    rotated = SMEC((16, 8), method, **opts).fit(synth)
    assert rotated.rotate and not plain.rotate
    for d in (16, 8):
        P, R = plain.transform(synth, d), rotated.transform(synth, d)
        np.testing.assert_allclose(R @ R.T, P @ P.T, atol=2e-5)  # orthogonal: the same scores
        assert not np.allclose(R, P, atol=1e-2)  # but other coordinates
    again = SMEC((16, 8), method, **opts).fit(synth)
    np.testing.assert_array_equal(again.transform(synth, 8), rotated.transform(synth, 8))
    other = SMEC((16, 8), method, seed=1, **opts).fit(synth)
    assert not np.allclose(other.projection(8).M, rotated.projection(8).M) or method == "smec"


def test_rotation_spreads_variance_evenly_and_helps_sign_codes():
    """PCA's coordinates are sorted by variance; rotated ones share it about equally, so a 1-bit code of each
    coordinate keeps more of the neighbours."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 64)) * np.geomspace(4.0, 0.05, 64)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    plain = SMEC((32,), "pca", rotate=False).fit(X)
    rotated = SMEC((32,), "pca").fit(X)
    Zp, Zr = plain.transform(X, 32), rotated.transform(X, 32)
    vp, vr = Zp.var(axis=0), Zr.var(axis=0)
    assert vp.max() / vp.min() > 20 and vr.max() / vr.min() < 5

    def sign_recall(Z):
        B = np.sign(Z)
        hits = []
        for i in range(200):
            exact = np.argsort(-(X @ X[i]))[1:11]
            code = np.argsort(-(B @ B[i]), kind="stable")[1:101]
            hits.append(np.isin(exact, code).mean())
        return float(np.mean(hits))

    assert sign_recall(Zr) > sign_recall(Zp) + 0.05


def test_truncate_is_not_rotated_and_old_saves_load_unrotated(tmp_path, synth):
    trunc = SMEC((8,), "truncate").fit(synth)
    assert not trunc.rotate
    np.testing.assert_allclose(trunc.transform(synth, 8),
                               synth[:, :8] / np.linalg.norm(synth[:, :8], axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(TypeError, match="rotate must be"):
        SMEC((8,), rotate="yes")
    pca = SMEC((8,), "pca").fit(synth)
    pca.save(tmp_path / "m")
    assert SMEC.load(tmp_path / "m").rotate
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg["rotate"]  # a save written before the option
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg, indent=2))
    write_manifest(tmp_path / "m", "smec_index.SMEC", FORMAT_VERSION, {})
    assert not SMEC.load(tmp_path / "m").rotate


def test_extend_rotates_the_new_stage_only(synth, monkeypatch):
    import smec_index.compressor.api as api

    calls = []
    real = api.rotate_outputs
    monkeypatch.setattr(api, "rotate_outputs", lambda p, dims, seed: (calls.append(tuple(dims)), real(p, dims, seed)))
    smec = SMEC((16,), "smec", **FAST).fit(synth)
    before = smec.projection(16).M.copy()
    smec.extend(8)
    np.testing.assert_array_equal(smec.projection(16).M, before)
    assert calls == [(16,), (8,)]
    SMEC((16,), "smec", rotate=False, **FAST).fit(synth).extend(8)
    assert calls == [(16,), (8,)]


def test_the_raw_full_vector_is_not_saved_as_a_matrix(tmp_path, synth, synth_supervised):
    from safetensors.numpy import load_file

    pca = SMEC((16, 8), "pca").fit(synth)
    pca.save(tmp_path / "u")
    assert set(load_file(str(tmp_path / "u" / "weights.safetensors"))) == {f"proj.{d}.{x}" for d in (16, 8) for x in "Mc"}
    back = SMEC.load(tmp_path / "u")
    np.testing.assert_array_equal(back.projection(48).M, np.eye(48, dtype=np.float32))
    np.testing.assert_array_equal(back.transform(synth, 48), pca.transform(synth, 48))
    Q, pairs = synth_supervised
    sup = SMEC((16,), "search-adaptor", **FAST).fit(synth, Q, pairs)  # its D -> D map is trained
    sup.save(tmp_path / "s")
    assert "proj.48.M" in load_file(str(tmp_path / "s" / "weights.safetensors"))
    np.testing.assert_array_equal(SMEC.load(tmp_path / "s").projection(48).M, sup.projection(48).M)


def test_candidate_ladder():
    assert candidate_ladder(100) == (10, 20, 50, 100)
    assert candidate_ladder(30) == (10, 20, 30)
    assert candidate_ladder(10) == (10,) and candidate_ladder(3) == (3,)
    for bad in (0, -5, 2.5, True, "100"):
        with pytest.raises(ValueError, match="code_candidates must be a positive int"):
            candidate_ladder(bad, "code_candidates")
        with pytest.raises(ValueError, match="SMEC: code_candidates must be a positive int"):
            SMEC((8,), code="rabitq1", code_candidates=bad)


def test_a_code_aware_fit_scores_candidates_by_coded_recall(synth, monkeypatch):
    """``code=``: a candidate's score is the share of each held-out row's exact top-10 among the coded stage's
    nearest c, averaged over ``candidate_ladder(code_candidates)``. With float32 codes and 10 candidates that is
    the float fit's own score on held-out rows (a float fit without mixed rows); adding a rung of 20 averages in a
    score at 20 that is between the one at 10 and 1; with as many candidates as training rows the top rung finds
    everything."""
    from smec_index.compressor import api

    with monkeypatch.context() as m:
        m.setattr(api, "MIXED_VAL", 0)
        plain = SMEC((16,), "smec", seed=3, **FAST).fit(synth)
    assert {r["held_out"] for r in plain.reports_} == {"rows"}  # one stage: later ones follow each fit's own choice
    coded = SMEC((16,), "smec", seed=3, code="float32", code_candidates=10, **FAST).fit(synth)
    a, b = plain.reports_[-1], coded.reports_[-1]
    assert set(a["candidates"]) == set(b["candidates"]) and a["candidates"]
    for name in a["candidates"]:
        assert b["candidates"][name] == pytest.approx(a["candidates"][name], abs=0.01)
    ten = SMEC((16,), "smec", seed=3, code="rabitq1", code_candidates=10, **FAST).fit(synth).reports_[-1]
    twenty = SMEC((16,), "smec", seed=3, code="rabitq1", code_candidates=20, **FAST).fit(synth).reports_[-1]
    assert set(ten["candidates"]) == set(twenty["candidates"])
    for name, at10 in ten["candidates"].items():
        at20 = 2 * twenty["candidates"][name] - at10
        assert at10 - 1e-9 <= at20 <= 1 + 1e-9 and at10 < 1
    fifty = SMEC((16,), "smec", seed=3, code="rabitq1", code_candidates=50, **FAST).fit(synth).reports_[-1]
    every = SMEC((16,), "smec", seed=3, code="rabitq1", code_candidates=len(synth), **FAST).fit(synth).reports_[-1]
    for name, below in fifty["candidates"].items():  # rungs 10, 20, 50, then every training row: all found
        assert every["candidates"][name] == pytest.approx((3 * below + 1) / 4)
    one_bit = SMEC((16, 8), "smec", seed=3, code="rabitq1", **FAST).fit(synth)
    for r in one_bit.reports_:
        if r["candidates"]:
            c = r["candidates"]
            pca = "pca-full" if "pca-full" in c else "pca-input"
            assert r["rule"] == "pca-2se" and r["choice"] in (max(c, key=c.get), pca)
            assert max(c.values()) - c[r["choice"]] <= r["tolerance"] + 1e-6
    assert one_bit.reports_[0]["out_dims"] == [16] and one_bit.reports_[0]["candidates"] != a["candidates"]


def test_a_code_aware_choice_keeps_full_pca_unless_beaten_by_two_standard_errors():
    """With a code the stage keeps PCA of the full vector unless the best candidate's mean per-row lead over it
    exceeds two standard errors; at the first stage (no "pca-full") PCA of the input is that map."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.0, 400)
    noise = rng.normal(0, 0.05, 400)

    def choose(items):
        trainer = SimpleNamespace(smec=SimpleNamespace(code="rabitq1"), sup=None, scores_queries=False, mixed=False,
                                  _score=lambda proj, d: items[proj])
        report, projections, selections = StageReport(out_dims=(8,)), {}, {}
        cands = {name: (name, None) for name in items}
        api._Trainer._choose(trainer, report, 8, cands, projections, selections)
        assert projections == {8: report.choice}
        return report

    se = float(np.std(noise, ddof=1) / np.sqrt(400))
    close = choose({"trained": base + noise + 1.5 * se - noise.mean(), "from-full": base, "pca-input": base - 0.01,
                    "pca-full": base})
    assert close.choice == "pca-full" and close.rule == "pca-2se" and close.tolerance == pytest.approx(2 * se, rel=0.01)
    far = choose({"trained": base + noise + 3 * se - noise.mean(), "pca-input": base, "pca-full": base})
    assert far.choice == "trained" and far.tolerance == 0
    first = choose({"trained": base + noise + 1.5 * se - noise.mean(), "pca-input": base})
    assert first.choice == "pca-input"
    pca_best = choose({"trained": base - 0.02, "pca-input": base + 0.01, "pca-full": base})
    assert pca_best.choice == "pca-input" and pca_best.tolerance == 0


def test_code_is_saved_and_checked(tmp_path, synth, synth_supervised):
    smec = SMEC((16, 8), "smec", code="binary-itq", **FAST).fit(synth)
    smec.save(tmp_path / "m")
    back = SMEC.load(tmp_path / "m")
    assert back.code == "binary-itq" and json.loads((tmp_path / "m" / "config.json").read_text())["code"] == "binary-itq"
    np.testing.assert_array_equal(back.transform(synth[:5], 8), smec.transform(synth[:5], 8))
    assert SMEC((8,), "smec").code is None
    with pytest.raises(ValueError, match="code must be None or one of"):
        SMEC((8,), code="qdrant-int8")
    with pytest.raises(ValueError, match="code must be None or one of"):
        SMEC((8,), code=1)
    with pytest.raises(ValueError, match="only applies to method='smec'"):
        SMEC((8,), "pca", code="rabitq1")
    with pytest.raises(ValueError, match="multiples of 8"):
        SMEC((12,), code="pq1")
    Q, pairs = synth_supervised
    with pytest.raises(ValueError, match="needs an unsupervised fit"):
        SMEC((8,), code="rabitq1", **FAST).fit(synth, Q, pairs)
    with pytest.raises(ValueError, match="trains on at least"):
        SMEC((16,), code="pq2", **FAST).fit(synth[:200])


def test_subset_keeps_only_the_given_stages(tmp_path, synth, synth_supervised):
    smec = SMEC((24, 16, 8), "smec", seed=1, **FAST).fit(synth)
    sub = smec.subset([8, 24])
    assert sub.dims_ == (24, 8) and sub.dims == (24, 8) and smec.dims_ == (24, 16, 8)
    for d in (24, 8):
        np.testing.assert_array_equal(sub.transform(synth[:7], d), smec.transform(synth[:7], d))
    sub.save(tmp_path / "s")
    assert SMEC.load(tmp_path / "s").dims_ == (24, 8)
    assert smec.subset(16).dims_ == (16,)
    with pytest.raises(ValueError, match=r"dims \[12\] are not trained"):
        smec.subset((16, 12))
    with pytest.raises(TypeError, match="dims must be an int or a sequence"):
        smec.subset(None)
    with pytest.raises(NotFittedError):
        SMEC((8,)).subset(8)
    Q, pairs = synth_supervised
    sup = SMEC((16, 8), "search-adaptor", seed=1, **FAST).fit(synth, Q, pairs)
    part = sup.subset(8)
    assert set(part.projections_) == {48, 8} and part.supervised_
    np.testing.assert_array_equal(part.projection(48).M, sup.projection(48).M)


def test_extend_keeps_choosing_by_the_code(synth):
    smec = SMEC((16,), "smec", code="pq1", seed=2, **FAST).fit(synth)
    with pytest.raises(ValueError, match="multiples of 8"):
        smec.extend(12)
    smec.extend(8)
    assert smec.dims_ == (16, 8) and smec.reports_[-1]["candidates"]


def test_train_data_gathers_eval_inputs_and_negative_pools_once():
    """Both are fixed for a training: computed on first use, then the same object every epoch and step."""
    from smec_index.compressor.train import TrainData

    rng = np.random.default_rng(0)
    inputs = torch.as_tensor(rng.normal(size=(50, 8)).astype(np.float32))
    data = TrainData(teacher=inputs, inputs=inputs, train_rows=np.arange(40), val_rows=np.arange(40, 45),
                     eval_rows=np.array([1, 5, 7, 40, 44]))
    got = data.eval_inputs()
    np.testing.assert_array_equal(got.numpy(), inputs.numpy()[[1, 5, 7, 40, 44]])
    assert data.eval_inputs() is got
    data.positives = [[(3, 1.0), (9, 2.0)], []]
    data.neg_pool = np.array([[9, 4, 3, 12], [3, 9, 4, 12]])
    pool = data.negatives_of(0)
    assert pool.dtype == np.int64 and pool.tolist() == [4, 12] and data.negatives_of(0) is pool
    assert data.negatives_of(1).tolist() == [3, 9, 4, 12]


def test_a_prefix_stage_trains_only_the_adapter_rows_its_output_reads():
    """Inside ``prefix_rows_only`` the adapter holds d of its n_in rows as parameters; leaving puts the others
    back untouched, also after an error; models with several outputs or ADS are left alone."""
    torch.manual_seed(0)
    m = StageModel(12, (4,), False)
    with torch.no_grad():
        m.adapter.linear.weight.normal_()
        m.adapter.linear.bias.normal_()
    W, b = m.adapter.linear.weight.detach().clone(), m.adapter.linear.bias.detach().clone()
    x = torch.randn(5, 12)
    before = m.forward_selected(x)[4].detach()
    with m.prefix_rows_only():
        assert [tuple(p.shape) for p in m.adapter.parameters()] == [(4, 12), (4,)]
        torch.testing.assert_close(m.forward_selected(x)[4].detach(), before, rtol=0, atol=0)
        with torch.no_grad():
            m.adapter.linear.weight.add_(1.0)
    assert torch.equal(m.adapter.linear.weight[4:], W[4:]) and torch.equal(m.adapter.linear.weight[:4], W[:4] + 1)
    assert torch.equal(m.adapter.linear.bias, b)
    with pytest.raises(RuntimeError, match="boom"):
        with m.prefix_rows_only():
            raise RuntimeError("boom")
    assert m.adapter.linear.weight.shape == (12, 12)
    for other in (StageModel(12, (4, 2), False), StageModel(12, (4,), True), StageModel(12, (12,), False)):
        with other.prefix_rows_only():
            assert other.adapter.linear.weight.shape == (12, 12)


@pytest.mark.parametrize("supervised", [False, True])
def test_training_only_the_read_rows_gives_the_same_floats(synth, synth_supervised, monkeypatch, supervised):
    import contextlib

    from smec_index.compressor.model import StageModel as SM

    Q, pairs = synth_supervised
    args = dict(queries=Q, qrels=pairs) if supervised else {}
    trimmed = SMEC((16, 8), "smec", seed=2, **FAST).fit(synth, **args)
    monkeypatch.setattr(SM, "prefix_rows_only", lambda self: contextlib.nullcontext())
    whole = SMEC((16, 8), "smec", seed=2, **FAST).fit(synth, **args)
    for d in (16, 8):
        np.testing.assert_array_equal(trimmed.transform(synth, d), whole.transform(synth, d))
    assert [r["epochs"] for r in trimmed.reports_] == [r["epochs"] for r in whole.reports_]


# ---------------------------------------------------------------- queries without labels
def _shifted_queries(synth: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Queries that are not documents: noisy copies of corpus rows plus one offset every query shares (an
    instruction prefix does this to a real model's query vectors)."""
    rng = np.random.default_rng(seed)
    offset = np.random.default_rng(99).normal(size=synth.shape[1]) * np.linspace(0.1, 1.0, synth.shape[1])
    Q = synth[rng.integers(0, len(synth), n)] + 0.6 * offset / np.linalg.norm(offset)
    Q += rng.normal(scale=0.05, size=Q.shape)
    return (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)


def _recall_vs_exact(smec: SMEC, X: np.ndarray, Q: np.ndarray, d: int) -> float:
    exact = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    got = np.argsort(-(smec.transform(Q, d) @ smec.transform(X, d).T), axis=1)[:, :10]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)]))


def test_unlabelled_queries_anchor_the_distillation_and_score_the_stages(synth):
    """Queries without qrels: every stage is scored on held-out queries (recorded in ``held_out``), trains on
    them as anchors, and on new queries of the same kind finds more of their full-dim neighbours than the
    fit on the corpus alone; the fit repeats from its seed."""
    Q = _shifted_queries(synth, 300, seed=3)
    new = _shifted_queries(synth, 200, seed=4)
    opts = dict(max_epochs=20, patience=6, progress=False)
    alone = SMEC((16, 8), seed=0, **opts).fit(synth)
    with_q = SMEC((16, 8), seed=0, **opts).fit(synth, queries=Q)
    assert {r["held_out"] for r in alone.reports_} == {"mixed rows"}
    assert {r["held_out"] for r in with_q.reports_} == {"queries"}
    assert all("corpus-only" in r["candidates"] for r in with_q.reports_ if r["candidates"])
    assert not with_q.supervised_
    gains = [_recall_vs_exact(with_q, synth, new, d) - _recall_vs_exact(alone, synth, new, d) for d in (16, 8)]
    assert gains[0] > 0.05 and gains[1] >= 0, gains
    again = SMEC((16, 8), seed=0, **opts).fit(synth, queries=Q)
    for d in (16, 8):
        np.testing.assert_array_equal(again.transform(new, d), with_q.transform(new, d))


def test_mixed_rows_mix_each_row_with_one_of_its_nearest():
    from smec_index.compressor.api import MIXED_LAMBDA, MIXED_NEIGHBOURS, _mixed_rows

    X = np.random.default_rng(0).normal(size=(60, 12))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    P = _mixed_rows(X, 20, np.random.default_rng(5))
    parents = np.sort(np.random.default_rng(5).choice(60, 20, replace=False))
    assert P.shape == (20, 12) and np.allclose(np.linalg.norm(P, axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(P, _mixed_rows(X, 20, np.random.default_rng(5)))
    for p, i in zip(P, parents):
        lams = []
        for j in np.argsort(-(X @ X[i]))[1 : MIXED_NEIGHBOURS + 1]:
            pair = np.stack([X[i], X[j]], 1)
            coef = np.linalg.lstsq(pair, p, rcond=None)[0]
            if np.linalg.norm(pair @ coef - p) < 1e-5 and (coef > 0).all():
                lams.append(coef[0] / coef.sum())
        assert len(lams) == 1 and MIXED_LAMBDA[0] - 1e-6 <= lams[0] <= MIXED_LAMBDA[1] + 1e-6, lams


def test_a_fit_without_queries_scores_its_stages_on_mixed_rows(synth):
    """No queries: every stage of a smec fit is scored (early stopping, the kept candidate) by held-out mixed rows'
    recall@10 against their exact top-10 among the training rows; they only score (no anchors, no second
    training without them). Corpora too small for ``UNLABELLED_MIN_VAL`` of them, the baselines and coded fits
    keep held-out rows."""
    from smec_index.compressor import api

    smec = SMEC((16, 8), seed=0, **FAST).fit(synth)
    assert {r["held_out"] for r in smec.reports_} == {"mixed rows"}
    assert not any("corpus-only" in r["candidates"] for r in smec.reports_)
    trainer = api._Trainer(SMEC((16, 8), seed=0, **FAST), synth, None, None)
    n = round(len(synth) * api.MIXED_FRACTION)
    P = api._mixed_rows(synth, n, np.random.default_rng([0, 2]))
    np.testing.assert_array_equal(trainer.Q, P)
    proj = trainer._pca_after(trainer._ident, 8)
    T = synth[trainer.train_rows]
    exact = np.argsort(-(P @ T.T), axis=1)[:, :10]
    got = np.argsort(-(proj(P) @ proj(T).T), axis=1)[:, :10]
    by_hand = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
    assert abs(trainer._score(proj, 8).mean() - by_hand) < 1e-6 and by_hand < 1
    small = SMEC((16,), seed=0, **FAST).fit(synth[: int(api.UNLABELLED_MIN_VAL / api.MIXED_FRACTION) - 10])
    assert {r["held_out"] for r in small.reports_} == {"rows"}
    assert {r["held_out"] for r in SMEC((16, 8), "mrl", seed=0, **FAST).fit(synth).reports_} == {"rows"}
    assert {r["held_out"] for r in SMEC((16,), seed=0, code="sq8", **FAST).fit(synth).reports_} == {"rows"}
    again = SMEC((16, 8), seed=0, **FAST).fit(synth)
    np.testing.assert_array_equal(again.transform(synth, 8), smec.transform(synth, 8))


def test_unlabelled_fit_trains_its_corpus_only_maps_as_a_fit_without_queries(synth, monkeypatch):
    """With unlabelled queries the stages trained without them stop on mixed rows with ``MIXED_PATIENCE``, as a fit
    without queries does; the others stop on the held-out queries with the fit's patience."""
    from smec_index.compressor import api

    Q = _shifted_queries(synth, 300, seed=3)
    seen = []
    real = api.train_stage
    monkeypatch.setattr(api, "train_stage", lambda model, data, cfg, seed, progress, desc: seen.append(
        (desc, data.u_name, len(data.u_val), len(data.u_train), cfg.patience)) or real(model, data, cfg, seed, progress,
                                                                                       desc))
    SMEC((16, 8), seed=0, **{**FAST, "patience": 3}).fit(synth, queries=Q)
    SMEC((16, 8), seed=0, **{k: v for k, v in FAST.items() if k != "patience"}).fit(synth, queries=Q)
    n_mixed = round(len(synth) * api.MIXED_FRACTION)
    quiet = [s for s in seen if "no queries" in s[0]]
    assert len(quiet) == 6 and all(s[1:4] == ("mixed", n_mixed, 0) for s in quiet)
    assert [s[4] for s in quiet] == [3, 3, 3, api.MIXED_PATIENCE, api.MIXED_PATIENCE, api.MIXED_PATIENCE]
    loud = [s for s in seen if "no queries" not in s[0]]
    assert loud and all(s[1:3] == ("queries", 60) and s[3] == 240 for s in loud)
    assert {s[4] for s in loud} == {3, TrainConfig().patience}


def test_unlabelled_choice_keeps_the_map_trained_without_queries_unless_beaten_by_a_standard_error(monkeypatch):
    from smec_index.compressor import api

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 400)
    noise = rng.normal(0, 0.05, 400)
    se = float(np.std(noise, ddof=1) / np.sqrt(400))

    def choose(per_item):
        trainer = api._Trainer.__new__(api._Trainer)
        trainer.sup, trainer.mixed = None, False
        trainer.unlabelled = (np.arange(10), np.arange(400))
        trainer.smec = SimpleNamespace(code=None)
        monkeypatch.setattr(api._Trainer, "_score", lambda self, proj, d: per_item[proj])
        report = StageReport((8,))
        trainer._choose(report, 8, {n: (n, None) for n in per_item}, {}, {})
        return report

    near = {"trained": base + noise + 0.5 * se - noise.mean(), "corpus-only": base, "pca-input": base - 0.01}
    r = choose(near)
    assert (r.choice, r.rule) == ("corpus-only", "one-se") and r.candidates["trained"] > r.candidates["corpus-only"]
    far = {**near, "trained": base + noise + 3 * se - noise.mean()}
    assert choose(far).choice == "trained"
    # without labels or queries (a fit scored on held-out or mixed rows) the best is kept
    trainer = api._Trainer.__new__(api._Trainer)
    trainer.sup, trainer.mixed, trainer.unlabelled, trainer.smec = None, True, (np.arange(0), np.arange(400)), \
        SimpleNamespace(code=None)
    report = StageReport((8,))
    trainer._choose(report, 8, {n: (n, None) for n in near}, {}, {})
    assert (report.choice, report.rule) == ("trained", "best")


def test_unlabelled_queries_as_anchors_only_when_too_few_to_hold_out(synth, monkeypatch):
    """Fewer than ``UNLABELLED_MIN_VAL`` held out: every query is an anchor and held-out rows score the stages."""
    from smec_index.compressor import api, train

    Q = _shifted_queries(synth, 150, seed=5)  # a fifth is 30 < 40
    seen = []
    real = train._Stepper._query_candidates
    monkeypatch.setattr(train._Stepper, "_query_candidates",
                        lambda self: seen.append(len(self.data.u_train)) or real(self))
    smec = SMEC((16,), seed=0, **FAST).fit(synth, queries=Q)
    assert api.UNLABELLED_MIN_VAL > 30 and set(seen) == {150}
    assert {r["held_out"] for r in smec.reports_} == {"rows"}


def test_unlabelled_split_holds_out_a_capped_fifth_and_caps_the_anchors():
    from smec_index.compressor.api import _split_unlabelled
    from smec_index.compressor.train import TrainConfig

    train_q, val_q = _split_unlabelled(1000, TrainConfig(), np.random.default_rng(0))
    assert len(val_q) == 200 and len(train_q) == 800 and not set(train_q) & set(val_q)
    train_q, val_q = _split_unlabelled(50_000, TrainConfig(max_val=300, max_train_rows=5000), np.random.default_rng(0))
    assert len(val_q) == 300 and len(train_q) == 5000 and not set(train_q) & set(val_q)
    train_q, val_q = _split_unlabelled(50, TrainConfig(), np.random.default_rng(0))
    assert len(val_q) == 0 and len(train_q) == 50


@pytest.mark.parametrize("kwargs", [dict(method="pca"), dict(method="mrl"), dict(sp_loss="l1"), dict(code="sq8")])
def test_unlabelled_queries_are_refused_where_nothing_distils_on_them(synth, kwargs):
    method = kwargs.pop("method", "smec")
    smec = SMEC((16, 8), method, **FAST, **kwargs)
    with pytest.raises(ValueError, match="queries without qrels train smec's listwise distillation"):
        smec.fit(synth, queries=synth[:40])
    assert not smec.is_fitted


@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError)])
def test_kl_queries_is_checked_when_the_compressor_is_made(value, error):
    with pytest.raises(error, match="kl_queries must be"):
        SMEC((16,), kl_queries=value)


def test_unlabelled_fit_on_a_single_query_anchors_on_it_and_scores_on_rows(synth):
    smec = SMEC((16,), seed=0, **FAST).fit(synth, queries=synth[:1] + 0.01)
    assert {r["held_out"] for r in smec.reports_} == {"rows"} and np.isfinite(smec.transform(synth, 16)).all()


def test_unlabelled_fit_extends_saves_and_loads(synth, tmp_path):
    Q = _shifted_queries(synth, 250, seed=6)
    smec = SMEC((16,), seed=0, **FAST).fit(synth, queries=Q)
    smec.extend(8)
    assert smec.reports_[-1]["held_out"] == "queries" and smec.dims_ == (16, 8)
    smec.save(tmp_path / "m")
    back = SMEC.load(tmp_path / "m")
    assert back.reports_ == smec.reports_
    np.testing.assert_array_equal(back.transform(Q, 8), smec.transform(Q, 8))


@pytest.mark.parametrize("queries", [False, True])
def test_a_listwise_stage_keeps_no_cross_batch_memory(synth, queries):
    """S-XBM serves eq. 7's pairs; a listwise stage draws its own candidates, with or without query anchors, and
    holds no memory to fill."""
    from smec_index.compressor.train import TrainConfig, TrainData, _Stepper

    X = torch.as_tensor(synth)
    data = TrainData(teacher=X, inputs=X, train_rows=np.arange(500), val_rows=np.arange(500, 600))
    if queries:
        data.u_inputs = data.u_teacher = X[:50]
        data.u_train, data.u_val = np.arange(40), np.arange(40, 50)
    stepper = _Stepper(StageModel(48, (16,), False), data, TrainConfig(sp_loss="kl", xbm=True),
                       np.random.default_rng(0), torch.Generator())
    assert stepper.memory is None and stepper.u_anchors == queries


def _graded(n: int = 600, D: int = 48, seed: int = 0) -> np.ndarray:
    """Rows with a decaying spectrum (distinct principal axes), L2-normalised."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, D)).astype(np.float32) * np.linspace(2, 0.1, D).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _adapter_widths(monkeypatch) -> list[int]:
    """The input width of every stage model the fits below build."""
    widths: list[int] = []
    make = api._Trainer._model

    def spy(self, n_in, *args, **kwargs):
        widths.append(n_in)
        return make(self, n_in, *args, **kwargs)

    monkeypatch.setattr(api._Trainer, "_model", spy)
    return widths


def test_a_wide_input_trains_its_full_vector_stages_in_the_top_principal_axes(monkeypatch):
    X = _graded()
    widths = _adapter_widths(monkeypatch)
    wide = SMEC((16, 8), seed=0, progress=False, max_epochs=2, max_adapter_dim=24).fit(X)
    assert max(widths) == 24 and 16 in widths  # the 8-dim stage from the 16-dim one; nothing 48 x 48
    # every map from the raw vector then lies in the span of the corpus's top 24 principal axes
    _, vecs = np.linalg.eigh(np.cov(X.astype(np.float64), rowvar=False))
    tail = vecs[:, :24]  # eigh sorts ascending: the 24 smallest axes
    for d in (16, 8):
        M = wide.projection(d).M
        assert np.abs(tail.T @ M).max() < 1e-4 * np.abs(M).max()
    assert wide.transform(X[:5], dim=8).shape == (5, 8)
    # at or above D nothing changes: the default (1,024) and a width of D give the same floats
    widths.clear()
    a = SMEC((16, 8), seed=0, progress=False, max_epochs=2).fit(X)
    assert max(widths) == 48
    b = SMEC((16, 8), seed=0, progress=False, max_epochs=2, max_adapter_dim=48).fit(X)
    assert np.array_equal(a.transform(X, dim=8), b.transform(X, dim=8))
    assert not np.allclose(a.transform(X, dim=8), wide.transform(X, dim=8))


def test_a_stage_wider_than_max_adapter_dim_and_a_labelled_fit_still_train(monkeypatch):
    X = _graded()
    widths = _adapter_widths(monkeypatch)
    s = SMEC((16, 8), seed=0, progress=False, max_epochs=2, max_adapter_dim=4).fit(X)
    assert sorted(set(widths)) == [8, 16]  # the 16-dim stage in 16 axes, the 8-dim from-full candidate in 8
    assert s.transform(X[:3], dim=16).shape == (3, 16)
    rng = np.random.default_rng(1)
    Q = X[:40] + 0.05 * rng.standard_normal((40, 48)).astype(np.float32)
    widths.clear()
    sup = SMEC((16, 8), seed=0, progress=False, max_epochs=2, max_adapter_dim=12).fit(X, Q, [(i, i, 1.0) for i in range(40)])
    assert sup.transform(Q, dim=8).shape == (40, 8) and sup.transform(Q, dim=48).shape == (40, 48)
    # the adapted full vector keeps its 48 x 48 adapter (its output is the full vector); every other stage,
    # the chain's first from the adapted vector included, trains on at most max(12, its dim) principal axes
    assert widths.count(48) == 1 and max(w for w in widths if w != 48) == 16 and 12 in widths


@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), ("8", TypeError), (True, TypeError),
                                          (8.0, TypeError)])
def test_max_adapter_dim_is_checked_when_the_compressor_is_made(value, error):
    with pytest.raises(error, match="max_adapter_dim must be"):
        SMEC((16,), max_adapter_dim=value)
