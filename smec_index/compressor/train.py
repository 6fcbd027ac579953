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

from .losses import RankLoss, SimilarityPreservationLoss
from .memory import CrossBatchMemory
from .model import StageModel

__all__ = ["TrainConfig", "TrainData", "train_stage", "StageReport"]


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults follow the paper where it gives one (memory 5000, alpha 1.0)."""

    max_epochs: int = 40
    patience: int = 4
    batch_size: int = 256
    query_batch_size: int = 32
    lr: float = 2e-3
    logits_lr: float = 0.05
    weight_decay: float = 0.0
    alpha: float = 1.0
    memory_size: int = 5000
    neighbours: int = 10
    neighbour_pool: int = 10
    negatives: int = 32
    mined: int = 100
    tau_start: float = 1.0
    tau_end: float = 0.05
    anneal_epochs: int = 10
    rank_temperature: float = 0.05
    val_fraction: float = 0.1
    max_val: int = 1000
    xbm: bool = True


@dataclass
class TrainData:
    """Frozen tensors one stage trains on (rows of the corpus and, when supervised, of the queries).

    ``teacher`` rows are L2-normalised full-dim embeddings whose similarities the student preserves;
    ``inputs`` are the stage's inputs (the frozen previous stage's un-normalised output).
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

    @property
    def supervised(self) -> bool:
        return self.q_inputs is not None

    def val_gains(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain of every corpus row for each validation query (nv, n), each query's judged gains (nv, P))."""
        if getattr(self, "_val_gains", None) is None:
            n = self.inputs.shape[0]
            gains = torch.zeros(len(self.val_q), n, device=self.inputs.device)
            width = max(len(self.positives[q]) for q in self.val_q)
            ideal = torch.zeros(len(self.val_q), max(width, 1), device=self.inputs.device)
            for i, q in enumerate(self.val_q):
                for j, (r, y) in enumerate(self.positives[q]):
                    gains[i, r] = y
                    ideal[i, j] = y
            self._val_gains = (gains, ideal)
        return self._val_gains


@dataclass
class StageReport:
    """What one training run did: epochs run, best epoch, validation curve, seconds."""

    out_dims: tuple[int, ...]
    epochs: int = 0
    best_epoch: int = 0
    val: list[float] = field(default_factory=list)
    train_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "out_dims": list(self.out_dims),
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "val": [round(v, 6) for v in self.val],
            "train_s": round(self.train_s, 3),
        }


def _eval_outputs(model: StageModel, x: torch.Tensor, chunk: int = 4096) -> dict[int, torch.Tensor]:
    outs: dict[int, list[torch.Tensor]] = {d: [] for d in model.out_dims}
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            for d, o in model.forward_eval(x[s : s + chunk]).items():
                outs[d].append(F.normalize(o, dim=-1))
    return {d: torch.cat(v) for d, v in outs.items()}


@torch.no_grad()
def _validate(model: StageModel, data: TrainData) -> float:
    """Mean over output dims of nDCG@10 on held-out queries (supervised) or, unsupervised, of
    recall@10 of held-out corpus rows against their exact teacher top-10 among the training rows."""
    model.eval()
    train_rows = torch.as_tensor(data.train_rows)
    corpus_out = _eval_outputs(model, data.inputs)
    scores = []
    if data.supervised:
        q_out = _eval_outputs(model, data.q_inputs[data.val_q])
        gains, ideal = data.val_gains()
        discounts = 1.0 / torch.log2(torch.arange(2, 12, dtype=torch.float32, device=gains.device))
        idcg = (torch.sort(ideal, dim=1, descending=True).values[:, :10] * discounts[: min(10, ideal.shape[1])]).sum(1)
        for d in model.out_dims:
            top = torch.topk(q_out[d] @ corpus_out[d].T, 10, dim=1).indices
            dcg = (gains.gather(1, top) * discounts).sum(1)
            scores.append(float((dcg / idcg).mean()))
    else:
        val = torch.as_tensor(data.val_rows)
        exact = torch.topk(data.teacher[val] @ data.teacher[train_rows].T, 10, dim=1).indices
        for d in model.out_dims:
            got = torch.topk(corpus_out[d][val] @ corpus_out[d][train_rows].T, 10, dim=1).indices
            hit = (got.unsqueeze(2) == exact.unsqueeze(1)).any(dim=2).float().mean()
            scores.append(float(hit))
    model.train()
    return float(np.mean(scores))


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
        pos_rows = {r for r, _ in pos}
        pool = [r for r in data.neg_pool[q] if r not in pos_rows]
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
    """Train ``model`` in place until the held-out score stops improving; restore the best state."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    device = data.inputs.device
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    sp_loss = SimilarityPreservationLoss()
    rank_loss = RankLoss(cfg.rank_temperature)
    logits = [p for n, p in model.named_parameters() if n.endswith("logits")]
    others = [p for n, p in model.named_parameters() if not n.endswith("logits")]
    groups = [{"params": others, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if logits:
        groups.append({"params": logits, "lr": cfg.logits_lr, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups)
    memory = CrossBatchMemory(cfg.memory_size, data.teacher.shape[1], data.inputs.shape[1], device) if cfg.xbm else None

    report = StageReport(model.out_dims)
    best = _validate(model, data)
    report.val.append(best)
    best_state = copy.deepcopy(model.state_dict())
    bad = 0
    n_steps = (
        math.ceil(len(data.train_q) / cfg.query_batch_size)
        if data.supervised
        else math.ceil(len(data.train_rows) / cfg.batch_size)
    )
    corpus_order = rng.permutation(data.train_rows)
    cpos = 0
    bar = tqdm(range(cfg.max_epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        annealing = bool(model.selectors) and epoch < cfg.anneal_epochs
        tau = cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** min(1.0, epoch / max(cfg.anneal_epochs - 1, 1))
        q_order = rng.permutation(data.train_q) if data.supervised else None
        for step in range(n_steps):
            if cpos + cfg.batch_size > len(corpus_order):
                corpus_order, cpos = rng.permutation(data.train_rows), 0
            rows = corpus_order[cpos : cpos + cfg.batch_size]
            cpos += cfg.batch_size
            rows_t = torch.as_tensor(rows, device=device)
            a_teacher, a_in = data.teacher[rows_t], data.inputs[rows_t]
            B = len(rows)
            masks = model.sample_masks(tau, gen)
            parts = [a_in]
            pos = None
            if memory is not None and len(memory) > 0:
                pos, t_sims, valid = memory.topk(a_teacher, rows_t, max(cfg.neighbour_pool, cfg.neighbours))
            elif memory is None and B > 1:
                sims = a_teacher @ a_teacher.T
                sims.fill_diagonal_(float("-inf"))
                t_sims, pos = torch.topk(sims, min(max(cfg.neighbour_pool, cfg.neighbours), B - 1), dim=1)
                valid = torch.ones_like(t_sims, dtype=torch.bool)
            if pos is not None and pos.shape[1] > cfg.neighbours:
                pick = torch.argsort(torch.rand(pos.shape, generator=gen).to(device), dim=1)[:, : cfg.neighbours]
                pos, t_sims, valid = pos.gather(1, pick), t_sims.gather(1, pick), valid.gather(1, pick)
            if data.supervised:
                qs = q_order[step * cfg.query_batch_size : (step + 1) * cfg.query_batch_size]
                c_rows, c_rel, c_valid = _query_batch(data, qs, cfg, rng)
                q_t = torch.as_tensor(qs, device=device)
                parts += [data.q_inputs[q_t], data.inputs[torch.as_tensor(c_rows.reshape(-1), device=device)]]
            outs = model.forward_train(torch.cat(parts), masks)
            n_outs = None
            if memory is not None and pos is not None:
                # memory neighbours are re-projected by the current stage every step (no drift); their
                # side of the pair carries no gradient, as a key encoder's: each row gets its gradient as an anchor
                with torch.no_grad():
                    n_outs = model.forward_train(memory.inputs[pos.reshape(-1)], masks)
            loss = torch.zeros((), device=device)
            for d, z in outs.items():
                za = z[:B]
                off = B
                if pos is not None:
                    zn = n_outs[d].reshape(B, pos.shape[1], -1) if n_outs is not None else za[pos]
                    loss = loss + cfg.alpha * sp_loss(t_sims, za, zn, valid)
                if data.supervised:
                    nq = len(qs)
                    zq = z[off : off + nq]
                    zc = z[off + nq :].reshape(nq, c_rows.shape[1], -1)
                    loss = loss + rank_loss(
                        zq, zc, torch.as_tensor(c_rel, device=device), torch.as_tensor(c_valid, device=device)
                    )
            if loss.requires_grad:  # the first S-XBM step has an empty memory and nothing to learn from
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if memory is not None:
                memory.enqueue(a_teacher, a_in, rows_t)
        score = _validate(model, data)
        report.val.append(score)
        report.epochs = epoch + 1
        bar.set_postfix(val=f"{score:.4f}", tau=f"{tau:.3f}")
        if score > best:
            best, bad, report.best_epoch = score, 0, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        elif not annealing:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    report.train_s = time.perf_counter() - t0
    return report
