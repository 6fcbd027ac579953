"""The training loop shared by every learned method: one ``StageModel``, early stopping on a held-out slice.

SMEC calls it once per stage (sequential), MRL once for all dims (joint), Search-Adaptor once per
dim (independent). What differs is only which StageModel is trained on which inputs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .losses import ListwiseDistillationLoss, RankLoss, SimilarityPreservationLoss
from .memory import NeighbourMemory, teacher_neighbours
from .model import StageModel

__all__ = ["KL_DEFAULTS", "TrainConfig", "TrainData", "train_stage", "StageReport", "score_outputs", "item_scores"]

# longest candidate list kept per row for S-XBM retrieval (rows x this many ids and sims in memory)
MAX_CANDIDATES = 1024
# the most bytes of rank bookkeeping a held-out nDCG holds at once (``item_scores``)
RANK_BYTES = 256 << 20


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults follow the paper where it gives one (memory 5000, alpha 1.0)."""

    max_epochs: int = 80
    patience: int = 8
    batch_size: int = 256
    query_batch_size: int = 32
    lr: float = 2e-3
    logits_lr: float = 0.2
    weight_decay: float = 0.0
    alpha: float = 1.0
    memory_size: int = 5000
    neighbours: int = 10
    neighbour_pool: int = 300
    negatives: int = 32
    mined: int = 100
    tau_start: float = 1.0
    tau_end: float = 0.05
    ads_epochs: int = 10
    rank_temperature: float = 0.05
    val_fraction: float = 0.1
    # at most this many held-out corpus rows, and held-out training queries (10,000 of them against a million
    # rows would be scores of 40 GB each validation)
    max_val: int = 1000
    # unsupervised fits train on a seeded sample of at most this many corpus rows (debian, 63,904 rows, training
    # queries' nDCG@10 at 128 / 64 / 32: 50,000 rows 0.6534 / 0.5828 / 0.4095, 20,000 rows 0.6547 / 0.5808 /
    # 0.4084; the neighbour ranking costs rows^2 x D)
    max_train_rows: int = 20_000
    # unsupervised "epoch" (one validation, one early-stopping tick) = at most this many anchors; the corpus
    # order runs on across epochs, so a large corpus is still seen whole, just validated more often. Measured on
    # the 1M benchmark's 100k-row sample (tiled mpnet, stages 256 and 64, 2 threads), recall@10 with full rerank
    # at 256 / 64: 8192 -> 154 s, 0.912 / 0.569; 16384 -> 213 s, 0.948 / 0.612; 32768 -> 421 s, 0.964 / 0.610
    # (shorter ticks let patience stop the D -> 256 stage while it was still improving)
    epoch_rows: int = 32768
    # a stage whose input is wider (the full vector of a wide model) trains on the top this-many principal axes
    # of it (or the stage's dim, if larger): its adapter is max_adapter_dim^2, not D^2 (100k x 4,096 took 213 s
    # unsupervised and 1,359 s supervised at D^2 on two threads). No measured set is wider, so none changes; on
    # SciFact mpnet (768) 256 to 512 axes kept the training queries' nDCG@10 within noise (docs/method.md,
    # "Wide inputs"). The adapted full vector of a labelled fit stays D x D (its output is the full vector)
    max_adapter_dim: int = 1024
    # ``SMEC(code=...)``: a stage candidate's held-out score is the share of each held-out row's exact top-10
    # found among its nearest by the coded stage vectors (recall@10 after an exact rerank of them), averaged over
    # 10, 20, 50 and this many candidates (``api.candidate_ladder``)
    code_candidates: int = 100
    xbm: bool = True
    # how a stage preserves the teacher's similarities: "l1" (paper eq. 7, pairs from S-XBM or the batch), "kl"
    # (listwise distillation: each anchor's softmax over its ``kl_neighbours`` nearest training rows and
    # ``kl_random`` random ones, teacher against student at ``kl_temperature``; a SMEC fit replaces lr,
    # batch_size and epoch_rows by ``KL_DEFAULTS`` unless its user gave them) or "auto" (resolved by the fit):
    # "kl" for unsupervised smec (and a labelled smec fit's stage trained without labels), "l1" for the baselines
    # and every stage trained with labels (docs/method.md, "Listwise distillation without labels")
    sp_loss: str = "auto"
    kl_neighbours: int = 50
    kl_random: int = 50
    kl_temperature: float = 0.1
    # a fit given queries without qrels: this many of them join each listwise step as anchors too, each over its
    # ``kl_neighbours`` nearest training rows and ``kl_random`` random ones (docs/method.md, "Queries without labels")
    kl_queries: int = 64


# what the kl loss trains with unless the user sets it: measured on 1,400-document samples of debian and SciFact
# (training queries, two seeds; docs/method.md); epochs of 2,048 anchors bring a 100k x 768 fit under 60 s
KL_DEFAULTS = dict(lr=1e-3, batch_size=128, epoch_rows=2048)


@dataclass
class TrainData:
    """Frozen tensors one stage trains on (rows of the corpus and, when supervised, of the queries).

    ``teacher`` rows are L2-normalised full-dim embeddings whose similarities the student preserves;
    ``inputs`` are the stage's inputs (the frozen previous stage's un-normalised output). ``eval_rows`` (sorted,
    holding ``train_rows``, ``val_rows`` and the held-out queries' judged and mined rows) are the corpus rows the
    held-out scores rank; None: every row. Queries without labels (``u_inputs``: their stage inputs, ``u_teacher``:
    their L2-normalised full vectors) are anchors of the listwise loss (rows ``u_train``) and, when some are held
    out (``u_val``), what every held-out score ranks instead of held-out corpus rows.
    """

    teacher: torch.Tensor
    inputs: torch.Tensor
    train_rows: np.ndarray
    val_rows: np.ndarray
    q_inputs: torch.Tensor | None = None
    q_teacher: torch.Tensor | None = None
    positives: list[list[tuple[int, float]]] | None = None
    neg_pool: np.ndarray | None = None
    train_q: np.ndarray | None = None
    val_q: np.ndarray | None = None
    eval_rows: np.ndarray | None = None
    u_inputs: torch.Tensor | None = None
    u_teacher: torch.Tensor | None = None
    u_train: np.ndarray | None = None
    u_val: np.ndarray | None = None
    # which held-out items ``u_val`` are ("queries", or "mixed" rows): stages sharing a teacher cache keep the
    # exact neighbours of each apart
    u_name: str = "queries"

    _cache: dict = field(default_factory=dict, repr=False)

    def share_teacher_cache(self, cache: dict) -> None:
        """Use ``cache`` for what depends only on the teacher and the row split (neighbour lists,
        validation ground truth), so stages trained against the same teacher compute it once."""
        self._cache = cache

    @property
    def supervised(self) -> bool:
        return self.q_inputs is not None

    @property
    def scores_queries(self) -> bool:
        """Whether held-out scores rank held-out unlabelled queries (else held-out corpus rows, or with labels the
        held-out labelled queries)."""
        return self.val_q is None and self.u_val is not None and len(self.u_val) > 0

    def eval_positions(self, rows: np.ndarray) -> np.ndarray:
        """Positions of corpus ``rows`` among the ``eval_rows`` (the rows themselves when every row is ranked)."""
        return rows if self.eval_rows is None else np.searchsorted(self.eval_rows, rows)

    def eval_inputs(self) -> torch.Tensor:
        """The stage inputs of the rows the held-out scores rank, gathered once (every epoch validates on them:
        28,000 of 100,000 rows of 768 dims took 29 ms a gather)."""
        if self.eval_rows is None:
            return self.inputs
        if getattr(self, "_eval_in", None) is None:
            self._eval_in = self.inputs[torch.as_tensor(self.eval_rows, device=self.inputs.device)]
        return self._eval_in

    def negatives_of(self, q: int) -> np.ndarray:
        """Query ``q``'s mined rows that are not among its judged documents, in mined order, computed once."""
        if getattr(self, "_negatives", None) is None:
            self._negatives = {}
        pool = self._negatives.get(q)
        if pool is None:
            judged = {r for r, _ in self.positives[q]}
            pool = self._negatives[q] = np.array([r for r in self.neg_pool[q] if r not in judged], dtype=np.int64)
        return pool

    def neighbour_lists(self, cfg: "TrainConfig") -> tuple[torch.Tensor, torch.Tensor]:
        """Each training row's ranked teacher neighbours among the training rows, computed once.

        With S-XBM, long enough that the memory's top ``neighbour_pool`` is inside the list: the pool itself when
        the memory can hold every training row, proportionally more (capped) when it holds a fraction. Listwise
        distillation needs only the ``kl_neighbours`` nearest (20,000 rows x 1,024 ids and sims were 245 MB).
        """
        if cfg.sp_loss == "kl":
            n_cand = cfg.kl_neighbours
        else:
            pool = max(cfg.neighbour_pool, cfg.neighbours)
            n_cand = min(max(pool, math.ceil(pool * len(self.train_rows) / cfg.memory_size)), MAX_CANDIDATES)
        key = ("neighbours", n_cand)
        longer = [k for k in self._cache if isinstance(k, tuple) and k[0] == "neighbours" and k[1] > n_cand]
        if key not in self._cache and longer:
            # lists are ranked best first: a longer one (an S-XBM stage's, same teacher) holds this one
            ids, sims = self._cache[longer[0]]
            self._cache[key] = ids[:, :n_cand], sims[:, :n_cand]
        if key not in self._cache:
            rows = torch.as_tensor(self.train_rows, device=self.inputs.device)
            self._cache[key] = teacher_neighbours(self.teacher, rows, n_cand)
        return self._cache[key]

    def query_lists(self, n_cand: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each unlabelled training query's ``n_cand`` nearest training rows by the teacher, best first: (row ids
        (len(u_train), n_cand), sims), computed once per teacher."""
        key = ("query_neighbours", n_cand)
        if key not in self._cache:
            rows = torch.as_tensor(self.train_rows, device=self.teacher.device)
            queries = self.u_teacher[torch.as_tensor(self.u_train, device=self.teacher.device)]
            self._cache[key] = _nearest_rows(queries, self.teacher, rows, n_cand)
        return self._cache[key]

    def val_exact(self) -> torch.Tensor:
        """Each held-out item's exact teacher top-10 among the training rows (positions), computed once: the
        held-out unlabelled queries' when ``scores_queries``, else the held-out rows'."""
        if self.scores_queries:
            key = ("val_exact", self.u_name)
            if key not in self._cache:
                train_rows = torch.as_tensor(self.train_rows)
                held = self.u_teacher[torch.as_tensor(self.u_val)]
                self._cache[key] = _nearest_rows(held, self.teacher, train_rows, min(10, len(train_rows)),
                                                 positions=True)[0]
            return self._cache[key]
        if "val_exact" not in self._cache:
            val, train_rows = torch.as_tensor(self.val_rows), torch.as_tensor(self.train_rows)
            k = min(10, len(train_rows))
            self._cache["val_exact"] = torch.topk(self.teacher[val] @ self.teacher[train_rows].T, k, dim=1).indices
        return self._cache["val_exact"]

    def val_positives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each validation query's judged docs, padded: (rows (nv, P) long, gains (nv, P); gain 0 = padding)."""
        if getattr(self, "_val_pos", None) is None:
            width = max(1, max(len(self.positives[q]) for q in self.val_q))
            rows = torch.zeros(len(self.val_q), width, dtype=torch.long)
            gains = torch.zeros(len(self.val_q), width)
            for i, q in enumerate(self.val_q):
                for j, (r, y) in enumerate(self.positives[q]):
                    rows[i, j], gains[i, j] = r, y
            rows = torch.as_tensor(self.eval_positions(rows.numpy()))  # padding (gain 0) points anywhere
            self._val_pos = (rows.to(self.inputs.device), gains.to(self.inputs.device))
        return self._val_pos


def _nearest_rows(queries: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor, k: int, positions: bool = False,
                  chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's ``k`` nearest of the teacher's ``rows`` by inner product, best first: (ids (Q, k), sims);
    ids are values of ``rows``, or with ``positions`` places in it. Ranked a chunk of queries at a time."""
    bank = teacher[rows]
    ids, sims = [], []
    for s in range(0, len(queries), chunk):
        v, p = torch.topk(queries[s : s + chunk] @ bank.T, k, dim=1)
        ids.append(p if positions else rows[p])
        sims.append(v)
    return torch.cat(ids), torch.cat(sims)


@dataclass
class StageReport:
    """What one training run did: epochs run, best epoch, validation curve, seconds."""

    out_dims: tuple[int, ...]
    epochs: int = 0
    best_epoch: int = 0
    val: list[float] = field(default_factory=list)
    train_s: float = 0.0
    # which map the stage kept ("trained", or a candidate it was compared with on the held-out data, e.g.
    # "pca-input"), and every candidate's held-out score; empty when no comparison was made
    choice: str = "trained"
    candidates: dict[str, float] = field(default_factory=dict)
    # the margin within which a preferred candidate was kept over the best (with labels one standard error, with
    # a code two); 0 when the best itself is kept
    tolerance: float = 0.0
    # how the candidate was kept: "best" (the best held-out mean), "one-se" (the first listed within one
    # standard error of the best) or, with a ``code``, "pca-2se" (PCA of the full vector unless another is ahead
    # by two standard errors), and with labels the share of labelled queries sharing a judged document with
    # another one, which decides between the first two (``_Trainer._choose``)
    rule: str = "best"
    recurrence: float | None = None
    # what the held-out scores ranked: "rows" (held-out corpus rows), "mixed rows" (pseudo-queries mixed from
    # pairs of neighbouring rows, a fit without queries), "queries" (held-out unlabelled queries) or "labelled
    # queries" (held-out training queries, nDCG)
    held_out: str = "rows"

    def to_dict(self) -> dict:
        return {
            "out_dims": list(self.out_dims),
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "val": [round(v, 6) for v in self.val],
            "train_s": round(self.train_s, 3),
            "choice": self.choice,
            "candidates": {k: round(v, 6) for k, v in self.candidates.items()},
            "tolerance": round(self.tolerance, 6),
            "rule": self.rule,
            "recurrence": None if self.recurrence is None else round(self.recurrence, 6),
            "held_out": self.held_out,
        }


def _eval_outputs(model: StageModel, x: torch.Tensor, chunk: int = 4096) -> dict[int, torch.Tensor]:
    outs: dict[int, list[torch.Tensor]] = {d: [] for d in model.out_dims}
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            # forward_selected: only the kept rows of a single-output stage's adapter (d x n_in, not n_in^2)
            for d, o in model.forward_selected(x[s : s + chunk]).items():
                outs[d].append(F.normalize(o, dim=-1))
    return {d: torch.cat(v) for d, v in outs.items()}


@torch.no_grad()
def _validate(model: StageModel, data: TrainData) -> float:
    """``score_outputs`` of the model's current outputs (every corpus row, and the held-out queries)."""
    model.eval()
    corpus_out = _eval_outputs(model, data.eval_inputs())
    q_out = None
    if data.supervised:
        q_out = _eval_outputs(model, data.q_inputs[data.val_q])
    elif data.scores_queries:
        q_out = _eval_outputs(model, data.u_inputs[torch.as_tensor(data.u_val, device=data.u_inputs.device)])
    model.train()
    return score_outputs(data, corpus_out, q_out)


@torch.no_grad()
def score_outputs(data: TrainData, corpus_out: dict[int, torch.Tensor],
                  q_out: dict[int, torch.Tensor] | None = None) -> float:
    """The held-out score every choice of the fit is made on, averaged over the output dims
    (``item_scores`` averaged over the held-out items, then over the dims)."""
    return float(np.mean([float(s.mean()) for s in item_scores(data, corpus_out, q_out)]))


@torch.no_grad()
def item_scores(data: TrainData, corpus_out: dict[int, torch.Tensor],
                q_out: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Each held-out item's score, one tensor per output dim.

    Supervised (``q_out``: L2-normalised outputs of the held-out training queries ``data.val_q``): nDCG over
    the full ranking of the corpus. Unsupervised: recall@10 of the held-out items against their exact teacher
    top-10 among the training rows; the items are the held-out unlabelled queries (``q_out``: their outputs,
    ``data.u_val``) when the fit has them, else held-out corpus rows. ``corpus_out`` holds the L2-normalised
    output of every row of ``data.eval_rows`` (default: the corpus) per dim.
    """
    scores = []
    if q_out is not None and data.val_q is not None:
        # nDCG over the full ranking (no cut-off): a positive moving from rank 50 to 20 counts, which keeps
        # the score smooth enough to early-stop on a few dozen held-out queries (nDCG@10 is too noisy there)
        rows, gains = data.val_positives()
        ideal = torch.sort(gains, dim=1, descending=True).values
        idcg = (ideal / torch.log2(torch.arange(2, gains.shape[1] + 2, device=gains.device))).sum(1)
        for d, zc in corpus_out.items():
            sims = q_out[d] @ zc.T
            ranks = _ranks_above(sims, sims.gather(1, rows)) + 1
            dcg = (gains / torch.log2(ranks.float() + 1)).sum(1)
            scores.append(dcg / idcg)
    else:
        train_rows = torch.as_tensor(data.eval_positions(data.train_rows))
        val = torch.as_tensor(data.eval_positions(data.val_rows))
        exact = data.val_exact()
        for d, zc in corpus_out.items():
            held = q_out[d] if q_out is not None else zc[val]
            got = torch.topk(held @ zc[train_rows].T, exact.shape[1], dim=1).indices
            scores.append((got.unsqueeze(2) == exact.unsqueeze(1)).any(dim=2).float().mean(1))
    return scores


def _ranks_above(sims: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """For each query (row) and each of its judged scores ``pos`` (Q, J), how many of its scores ``sims`` (Q, N)
    are strictly higher: each score's place among the query's sorted judged scores (a binary search), then a
    histogram of the places, so two passes over the scores whatever J (comparing every score with every judged
    one made Q x J x N booleans, and cost J times as much)."""
    Q, J = pos.shape
    # a block of queries at a time: the places are Q x N longs (600 x 80,000 would be 384 MB at once)
    step = max(1, RANK_BYTES // (8 * max(1, sims.shape[1])))
    out = []
    for s in range(0, Q, step):
        block, p = sims[s : s + step], pos[s : s + step]
        sorted_p, order = torch.sort(p, dim=1)
        place = torch.searchsorted(sorted_p, block)  # judged scores strictly below each score
        place += torch.arange(len(block), device=place.device).unsqueeze(1) * (J + 1)
        hist = torch.bincount(place.reshape(-1), minlength=len(block) * (J + 1)).reshape(len(block), J + 1)
        above = hist.flip(1).cumsum(1).flip(1)[:, 1:]  # above[:, j]: scores with place > j, i.e. > sorted_p[:, j]
        out.append(torch.empty_like(above).scatter_(1, order, above))
    return torch.cat(out)


def _query_batch(
    data: TrainData, qs: np.ndarray, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate doc rows (B, C), relevance (B, C) and validity (B, C) for a batch of queries."""
    n_pos = max(len(data.positives[q]) for q in qs)
    C = n_pos + cfg.negatives
    rows = np.zeros((len(qs), C), dtype=np.int64)
    rel = np.zeros((len(qs), C), dtype=np.float32)
    valid = np.zeros((len(qs), C), dtype=bool)
    for i, q in enumerate(qs):
        pos = data.positives[q]
        for j, (r, y) in enumerate(pos):
            rows[i, j], rel[i, j], valid[i, j] = r, y, True
        pool = data.negatives_of(q)
        neg = rng.choice(pool, size=min(cfg.negatives, len(pool)), replace=False)
        rows[i, n_pos : n_pos + len(neg)] = neg
        valid[i, n_pos : n_pos + len(neg)] = True
    return rows, rel, valid


def train_stage(
    model: StageModel,
    data: TrainData,
    cfg: TrainConfig,
    seed: int,
    progress: bool = False,
    desc: str = "stage",
) -> StageReport:
    """Train ``model`` in place and restore its best held-out state.

    With ADS selectors the stage trains in two phases. *Select*: only the importance logits learn,
    for ``ads_epochs`` epochs, through the straight-through Gumbel-softmax with tau annealed from
    ``tau_start`` to ``tau_end``, the adapter held at its initial identity; the best selection on the
    held-out slice is kept. *Adapt*: the selection is fixed to its hard top-k and the adapter learns
    until the held-out score stops improving (``patience`` epochs); its best epoch is kept, even when the
    select phase scored higher. Without selectors only *adapt* runs.
    """
    from tqdm.auto import tqdm

    from .._progress import tqdm_disable

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    step_fn = _Stepper(model, data, cfg, rng, gen)
    report = StageReport(model.out_dims)
    # a single prefix output reads d of the adapter's n_in rows; the others never move (zero gradient), so the
    # optimizer holds only those d (Adam on n_in^2 weights was most of its work for the from-full candidates)
    with model.prefix_rows_only():
        best = _validate(model, data)
        report.val.append(best)
        best_state = copy.deepcopy(model.state_dict())
        logits = [p for n, p in model.named_parameters() if n.endswith("logits")]
        adapter = [p for n, p in model.named_parameters() if not n.endswith("logits")]
        phases = ([("select", cfg.ads_epochs)] if logits and cfg.ads_epochs > 0 else []) + [("adapt", cfg.max_epochs)]
        bar = tqdm(total=sum(n for _, n in phases), desc=desc, disable=tqdm_disable(progress), leave=False)
        for phase, n_epochs in phases:
            select = phase == "select"
            for p in logits:
                p.requires_grad_(select)
            for p in adapter:
                p.requires_grad_(not select)
            opt = torch.optim.Adam(logits if select else adapter, lr=cfg.logits_lr if select else cfg.lr,
                                   weight_decay=0.0 if select else cfg.weight_decay)
            bad = 0
            for epoch in range(n_epochs):
                tau = (cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** (epoch / max(n_epochs - 1, 1)) if select
                       else None)
                step_fn.epoch(opt, tau)
                score = _validate(model, data)
                report.val.append(score)
                report.epochs += 1
                bar.update(1)
                bar.set_postfix(phase=phase, val=f"{score:.4f}")
                if score > best:
                    best, bad, report.best_epoch = score, 0, report.epochs
                    best_state = copy.deepcopy(model.state_dict())
                elif not select:
                    bad += 1
                    if bad >= cfg.patience:
                        break
            model.load_state_dict(best_state)
            if select:
                # the adapt phase keeps its own best epoch: the select phase's score (adapter still at its start) is
                # the best of ten draws on a small held-out slice, and an adapter that only tied it was thrown away
                # (mpnet supervised, 64 -> 32 at two threads: best select 0.726, adapt reached 0.726, never more;
                # nDCG@10 0.6714 with the untrained adapter, 0.6974 with the adapt phase's best)
                best = float("-inf")
    bar.close()
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    report.train_s = time.perf_counter() - t0
    return report


class _Stepper:
    """One epoch of training steps: corpus anchors with their neighbours (similarity preservation: eq. 7, or
    listwise distillation with ``sp_loss="kl"``) and, when supervised, query batches with positives and mined
    negatives (rank loss, eq. 8)."""

    def __init__(self, model: StageModel, data: TrainData, cfg: TrainConfig, rng: np.random.Generator,
                 gen: torch.Generator) -> None:
        self.model, self.data, self.cfg, self.rng, self.gen = model, data, cfg, rng, gen
        self.device = data.inputs.device
        self.sp_loss = SimilarityPreservationLoss()
        self.kl_loss = ListwiseDistillationLoss(cfg.kl_temperature)
        self.rank_loss = RankLoss(cfg.rank_temperature)
        self.memory = None
        self.kl = cfg.sp_loss == "kl"
        self.train_rows_t = torch.as_tensor(data.train_rows, device=self.device)
        # unlabelled queries as listwise anchors: only the listwise loss takes them (a labelled fit's queries
        # have the rank loss)
        self.u_anchors = self.kl and not data.supervised and data.u_train is not None and len(data.u_train) > 0
        if self.kl:
            self.cand_ids, self.cand_sims = data.neighbour_lists(cfg)
            if self.u_anchors:
                self.u_ids, self.u_sims = data.query_lists(min(cfg.kl_neighbours, len(data.train_rows)))
        elif cfg.xbm:
            cand_ids, cand_sims = data.neighbour_lists(cfg)
            self.memory = NeighbourMemory(cfg.memory_size, cand_ids, cand_sims, self.train_rows_t, data.inputs.shape[0])
        self.n_steps = (
            math.ceil(len(data.train_q) / cfg.query_batch_size)
            if data.supervised
            else math.ceil(min(len(data.train_rows), cfg.epoch_rows) / cfg.batch_size)
        )
        self.corpus_order = rng.permutation(data.train_rows)
        self.cpos = 0

    def _neighbours(self, rows_t: torch.Tensor):
        """(neighbours, teacher sims, valid) of each anchor, or None when there are none yet.

        With S-XBM the neighbours are row ids from the memory: from its top ``neighbour_pool`` candidates,
        ``neighbours`` are sampled uniformly among the valid ones (all of the pool when it is no larger).
        In-batch (eq. 4) they are positions in the batch: the anchor's top ``neighbours`` rows."""
        cfg, B = self.cfg, rows_t.shape[0]
        if self.memory is not None:
            if len(self.memory) == 0:
                return None
            pool = max(cfg.neighbour_pool, cfg.neighbours)
            nb, t_sims, valid = self.memory.sample(rows_t, pool, cfg.neighbours, self.gen)
        else:
            if B < 2:
                return None
            # paper eq. 4: each anchor's top-k most similar rows of its own batch, by the teacher
            a_teacher = self.data.teacher[rows_t]
            sims = a_teacher @ a_teacher.T
            sims.fill_diagonal_(float("-inf"))
            t_sims, nb = torch.topk(sims, min(cfg.neighbours, B - 1), dim=1)
            valid = torch.ones_like(t_sims, dtype=torch.bool)
        if nb.shape[1] == 0:  # a corpus of one training row has no neighbours
            return None
        return nb, t_sims, valid

    def _kl_candidates(self, rows_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each anchor's listwise candidates and their teacher similarities, (B, K) each: its ``kl_neighbours``
        nearest training rows (ranked once per teacher) and ``kl_random`` training rows drawn uniformly (the far
        end of the list, which neighbours alone never show the student)."""
        lines = torch.searchsorted(self.train_rows_t, rows_t)
        P = min(self.cfg.kl_neighbours, self.cand_ids.shape[1])
        rnd, rnd_sims = self._random_candidates(self.data.teacher.index_select(0, rows_t))
        return torch.cat([self.cand_ids[lines, :P], rnd], 1), torch.cat([self.cand_sims[lines, :P], rnd_sims], 1)

    def _random_candidates(self, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``kl_random`` training rows drawn uniformly for each anchor (its teacher vector, a row of ``anchors``)
        and their teacher similarities to it, (B, kl_random) each."""
        draw = torch.randint(len(self.train_rows_t), (len(anchors), self.cfg.kl_random), generator=self.gen)
        rnd = self.train_rows_t[draw.to(self.device)]
        teacher = self.data.teacher
        rnd_sims = torch.einsum("bd,bkd->bk", anchors,
                                teacher.index_select(0, rnd.reshape(-1)).reshape(*rnd.shape, -1))
        return rnd, rnd_sims

    def _query_candidates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A step's unlabelled query anchors (``kl_queries`` drawn with replacement from the training ones), as
        positions in ``u_inputs``, with their listwise candidates and teacher similarities as ``_kl_candidates``:
        the ``kl_neighbours`` nearest training rows and ``kl_random`` random ones."""
        data = self.data
        at = torch.as_tensor(self.rng.integers(0, len(data.u_train), self.cfg.kl_queries), device=self.device)
        qs = torch.as_tensor(data.u_train, device=self.device)[at]
        rnd, rnd_sims = self._random_candidates(data.u_teacher.index_select(0, qs))
        return qs, torch.cat([self.u_ids[at], rnd], 1), torch.cat([self.u_sims[at], rnd_sims], 1)

    def epoch(self, opt: torch.optim.Optimizer, tau: float | None) -> None:
        """``tau`` is the Gumbel-softmax temperature of the select phase; None trains on the fixed
        hard selection (only the kept coordinates are computed)."""
        cfg, data, model, device = self.cfg, self.data, self.model, self.device
        q_order = self.rng.permutation(data.train_q) if data.supervised else None
        masks = None
        for step in range(self.n_steps):
            if self.cpos + cfg.batch_size > len(self.corpus_order):
                self.corpus_order, self.cpos = self.rng.permutation(data.train_rows), 0
            rows = self.corpus_order[self.cpos : self.cpos + cfg.batch_size]
            self.cpos += cfg.batch_size
            rows_t = torch.as_tensor(rows, device=device)
            B = len(rows)
            if tau is not None:
                masks = model.sample_masks(tau, self.gen)
            nb = None if self.kl else self._neighbours(rows_t)
            # index_select: a row gather two to three times faster than indexing on CPU, same floats
            parts = [data.inputs.index_select(0, rows_t)]
            if data.supervised:
                qs = q_order[step * cfg.query_batch_size : (step + 1) * cfg.query_batch_size]
                c_rows, c_rel, c_valid = _query_batch(data, qs, cfg, self.rng)
                parts += [data.q_inputs.index_select(0, torch.as_tensor(qs, device=device)),
                          data.inputs.index_select(0, torch.as_tensor(c_rows.reshape(-1), device=device))]
            n_q = 0
            if self.u_anchors:
                # the queries' candidate rows join the anchors' in one distinct set, projected once
                qs, u_ids, u_t = self._query_candidates()
                kl_ids, kl_t = self._kl_candidates(rows_t)
                n_q, n_a = len(qs), kl_ids.numel()
                kl_rows, kl_at = torch.unique(torch.cat([kl_ids.reshape(-1), u_ids.reshape(-1)]), return_inverse=True)
                kl_at, u_at = kl_at[:n_a], kl_at[n_a:]
                parts += [data.u_inputs.index_select(0, qs), data.inputs.index_select(0, kl_rows)]
            elif self.kl:
                kl_ids, kl_t = self._kl_candidates(rows_t)
                # each distinct candidate row is projected once (random draws and shared neighbours repeat rows:
                # a third of them on SciFact); both sides of a pair carry gradient: with the candidates' side
                # frozen (as S-XBM's memory side) the 1,400-row debian sample kept PCA at 64 dims instead of
                # gaining 1.5 points
                kl_rows, kl_at = torch.unique(kl_ids.reshape(-1), return_inverse=True)
                if len(parts) == 1:  # one gather, not two and a copy into ``torch.cat``'s output
                    parts = [data.inputs.index_select(0, torch.cat([rows_t, kl_rows]))]
                else:
                    parts.append(data.inputs.index_select(0, kl_rows))
            forward = model.forward_selected if masks is None else (lambda x: model.forward_train(x, masks))
            outs = forward(parts[0] if len(parts) == 1 else torch.cat(parts))
            n_outs = None
            if self.memory is not None and nb is not None:
                # memory rows are re-projected by the current stage every step (stored features never
                # drift); their side of a pair carries no gradient, like a key encoder's: every row gets
                # its gradient when it is an anchor. A row drawn by several anchors (a quarter of the draws)
                # is projected once; a row's projection does not depend on the others', so the same floats
                with torch.no_grad():
                    drawn, nb_at = torch.unique(nb[0].clamp(min=0).reshape(-1), return_inverse=True)
                    n_outs = forward(data.inputs.index_select(0, drawn))
            loss = torch.zeros((), device=device)
            for d, z in outs.items():
                za = z[:B]
                if nb is not None:
                    pos, t_sims, valid = nb
                    # neighbours as (distinct rows, index): the memory's projected once each, in-batch ones are
                    # anchors (the losses gather them with index_select, which sums repeats in index order)
                    if n_outs is not None:
                        loss = loss + cfg.alpha * self.sp_loss(t_sims, za, n_outs[d], valid, nb_at)
                    else:
                        loss = loss + cfg.alpha * self.sp_loss(t_sims, za, za, valid, pos.reshape(-1))
                if self.kl:
                    z_rows = z[-len(kl_rows):]
                    loss = loss + cfg.alpha * self.kl_loss(kl_t, za, z_rows, kl_at)
                    if n_q:
                        loss = loss + cfg.alpha * self.kl_loss(u_t, z[B : B + n_q], z_rows, u_at)
                if data.supervised:
                    nq = len(qs)
                    zq = z[B : B + nq]
                    zc = z[B + nq : B + nq + c_rows.size].reshape(nq, c_rows.shape[1], -1)
                    loss = loss + self.rank_loss(
                        zq, zc, torch.as_tensor(c_rel, device=device), torch.as_tensor(c_valid, device=device)
                    )
            if loss.requires_grad:  # the first S-XBM step has an empty memory and nothing to learn from
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if self.memory is not None:
                self.memory.enqueue(rows_t)
