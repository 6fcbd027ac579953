"""The losses SMEC trains with: similarity preservation (paper eq. 7, or listwise distillation) and rank loss (eq. 8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SimilarityPreservationLoss", "ListwiseDistillationLoss", "RankLoss"]


def _candidates(teacher_sims: torch.Tensor, z: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """The L2-normalised (B, K, d) candidates: ``z`` itself, or with ``index`` the rows ``z[index]`` normalised
    before they are gathered (each distinct row once: normalising 128 x 100 drawn rows of 256 dims cost three times
    the rest of the listwise loss; the same values, gradients summed in another order)."""
    if index is None:
        return F.normalize(z, dim=-1)
    # index_select: its backward adds the repeated rows in index order (index_add_; indexing's backward summed
    # them in a run-dependent order on two threads)
    return F.normalize(z, dim=-1).index_select(0, index).reshape(*teacher_sims.shape, -1)


class SimilarityPreservationLoss(nn.Module):
    """Unsupervised teacher-student loss of SMEC (paper eq. 7).

    ``mean_i mean_{j in N_K(i)} |Sim(e_i, e_j) - Sim(z_i, z_j)|`` where e are the frozen (teacher)
    embeddings, z their compressed images and N_K(i) the top-K neighbours of i taken from the S-XBM
    memory (or from the batch). The paper sums; we average so that alpha does not depend on the
    batch size or K.

    Args:
        teacher_sims: (B, K) cosine similarities between anchors and their neighbours at full dim.
        z_anchor: (B, d) compressed anchors (any scale; cosine is taken here).
        z_neighbours: (B, K, d) compressed neighbours.
        valid: optional (B, K) bool mask of real neighbours (the memory may hold fewer than K).
        index: optional (B * K,) long: then ``z_neighbours`` is (U, d), rows that neighbours repeat, and
            neighbour k of anchor b is row ``index[b * K + k]`` (``_candidates``).
    """

    def forward(
        self,
        teacher_sims: torch.Tensor,
        z_anchor: torch.Tensor,
        z_neighbours: torch.Tensor,
        valid: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        za = F.normalize(z_anchor, dim=-1)
        zn = _candidates(teacher_sims, z_neighbours, index)
        student = torch.einsum("bd,bkd->bk", za, zn)
        err = (teacher_sims - student).abs()
        if valid is None:
            return err.mean()
        n = valid.sum()
        return (err * valid).sum() / n.clamp(min=1)


class ListwiseDistillationLoss(nn.Module):
    """Similarity preservation as a ranking: ``KL(softmax(teacher / T) || softmax(student / T))`` over each
    anchor's candidates, averaged over anchors.

    Eq. 7 asks every pair's compressed cosine to equal its full one, which a d-dim space cannot do for all pairs
    at once, so it trades the order of an anchor's neighbours for their values. The softmax only cares how
    each candidate scores against the anchor's others, the order a search returns (docs/method.md measures it).

    Args:
        teacher_sims: (B, K) full-dim cosines between anchors and their candidates.
        z_anchor: (B, d) compressed anchors (any scale; cosine is taken here).
        z_candidates: (B, K, d) compressed candidates, or (U, d) rows with ``index`` as in
            ``SimilarityPreservationLoss``.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, teacher_sims: torch.Tensor, z_anchor: torch.Tensor, z_candidates: torch.Tensor,
                index: torch.Tensor | None = None) -> torch.Tensor:
        student = torch.einsum("bd,bkd->bk", F.normalize(z_anchor, dim=-1),
                               _candidates(teacher_sims, z_candidates, index))
        T = self.temperature
        return F.kl_div(F.log_softmax(student / T, dim=1), F.softmax(teacher_sims / T, dim=1), reduction="batchmean")


class RankLoss(nn.Module):
    """Pairwise rank loss on graded relevance (paper eq. 8, as in Search-Adaptor).

    For every query i and candidate documents j, k with y_ij > y_ik it adds
    ``(y_ij - y_ik) * log(1 + exp((s_ik - s_ij) / T))`` with s the cosine similarity at the
    compressed dim. The paper's loss is T = 1; cosines lie in [-1, 1], so a temperature T < 1
    (default 0.05) gives the log-sigmoid a useful slope. Averaged over the pairs with weight > 0.

    Args:
        q: (B, d) compressed queries.
        docs: (B, C, d) compressed candidate documents of each query.
        rel: (B, C) graded relevance of each candidate (0 for mined negatives).
        valid: (B, C) bool mask of real candidates (queries have different numbers of positives).
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, q: torch.Tensor, docs: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        s = torch.einsum("bd,bcd->bc", F.normalize(q, dim=-1), F.normalize(docs, dim=-1))
        # w[b, j, k] > 0 when candidate j is more relevant than candidate k.
        w = (rel.unsqueeze(2) - rel.unsqueeze(1)).clamp(min=0)
        w = w * (valid.unsqueeze(2) & valid.unsqueeze(1))
        pair = F.softplus((s.unsqueeze(1) - s.unsqueeze(2)) / self.temperature)
        n = (w > 0).sum()
        return (w * pair).sum() / n.clamp(min=1)
