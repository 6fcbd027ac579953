"""S-XBM: a FIFO cross-batch memory of frozen embeddings with top-k neighbour retrieval."""

from __future__ import annotations

import torch

__all__ = ["CrossBatchMemory"]


class CrossBatchMemory:
    """FIFO queue of frozen rows, searched by the teacher embedding (paper section 3.4).

    Each entry keeps the teacher embedding (what neighbours are chosen and scored by), the input of
    the trainable stage (what the student re-projects every step, so stored features never drift)
    and the row id (so an anchor is never its own neighbour). Only frozen features are stored.
    """

    def __init__(self, size: int, teacher_dim: int, input_dim: int, device: torch.device | str = "cpu") -> None:
        if size <= 0:
            raise ValueError(f"CrossBatchMemory: size must be > 0, got {size}")
        self.size = size
        self.teacher = torch.zeros(size, teacher_dim, device=device)
        self.inputs = torch.zeros(size, input_dim, device=device)
        self.ids = torch.full((size,), -1, dtype=torch.long, device=device)
        self.ptr = 0
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def enqueue(self, teacher: torch.Tensor, inputs: torch.Tensor, ids: torch.Tensor) -> None:
        """Append rows, overwriting the oldest ones once full."""
        n = teacher.shape[0]
        if n >= self.size:
            teacher, inputs, ids = teacher[-self.size :], inputs[-self.size :], ids[-self.size :]
            n = self.size
        pos = (torch.arange(n, device=self.ids.device) + self.ptr) % self.size
        self.teacher[pos] = teacher
        self.inputs[pos] = inputs
        self.ids[pos] = ids
        self.ptr = (self.ptr + n) % self.size
        self.count = min(self.count + n, self.size)

    @torch.no_grad()
    def topk(self, query_teacher: torch.Tensor, query_ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k memory entries by teacher inner product for each query row.

        Returns (positions (B, k) into the memory, teacher sims (B, k), valid (B, k) bool). Empty
        slots and entries with the query's own id are never returned as valid.
        """
        sims = query_teacher @ self.teacher.T
        invalid = (self.ids.unsqueeze(0) < 0) | (self.ids.unsqueeze(0) == query_ids.unsqueeze(1))
        sims = sims.masked_fill(invalid, float("-inf"))
        k = min(k, self.size)
        vals, pos = torch.topk(sims, k, dim=1)
        valid = torch.isfinite(vals)
        return pos, vals.masked_fill(~valid, 0.0), valid
