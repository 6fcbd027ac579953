"""S-XBM: a FIFO cross-batch memory of frozen embeddings with top-k neighbour retrieval."""

from __future__ import annotations

import torch

__all__ = ["CrossBatchMemory", "NeighbourMemory", "teacher_neighbours"]


class _Fifo:
    """The ring of ``size`` slots both memories share: row ids per slot (-1: empty), oldest overwritten first."""

    def __init__(self, size: int, device: torch.device | str) -> None:
        if size <= 0:
            raise ValueError(f"{type(self).__name__}: size must be > 0, got {size}")
        self.size = size
        self.ids = torch.full((size,), -1, dtype=torch.long, device=device)
        self.ptr = 0
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def _take_slots(self, n: int) -> torch.Tensor:
        """The next ``n`` (<= size) slots, oldest first; advances the ring."""
        pos = (torch.arange(n, device=self.ids.device) + self.ptr) % self.size
        self.ptr = (self.ptr + n) % self.size
        self.count = min(self.count + n, self.size)
        return pos


class CrossBatchMemory(_Fifo):
    """FIFO queue of frozen rows, searched by the teacher embedding (paper section 3.4).

    Each entry keeps the teacher embedding (what neighbours are chosen and scored by), the input of
    the trainable stage (what the student re-projects every step, so stored features never drift)
    and the row id (so an anchor is never its own neighbour). Only frozen features are stored.
    """

    def __init__(self, size: int, teacher_dim: int, input_dim: int, device: torch.device | str = "cpu") -> None:
        super().__init__(size, device)
        self.teacher = torch.zeros(size, teacher_dim, device=device)
        self.inputs = torch.zeros(size, input_dim, device=device)

    @torch.no_grad()
    def enqueue(self, teacher: torch.Tensor, inputs: torch.Tensor, ids: torch.Tensor) -> None:
        """Append rows, overwriting the oldest ones once full."""
        n = teacher.shape[0]
        if n >= self.size:
            teacher, inputs, ids = teacher[-self.size :], inputs[-self.size :], ids[-self.size :]
            n = self.size
        pos = self._take_slots(n)
        self.teacher[pos] = teacher
        self.inputs[pos] = inputs
        self.ids[pos] = ids

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


@torch.no_grad()
def teacher_neighbours(
    teacher: torch.Tensor, rows: torch.Tensor, n_cand: int, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``n_cand`` nearest other rows (teacher inner product), best first.

    Returns (ids (len(rows), n_cand) long, sims (len(rows), n_cand) float): ids are values of
    ``rows``. Exact, computed in chunks so memory stays at ``chunk x len(rows)`` scores.
    """
    bank = teacher[rows]
    n = bank.shape[0]
    n_cand = min(n_cand, n - 1)
    ids = torch.empty(n, n_cand, dtype=torch.long, device=teacher.device)
    sims = torch.empty(n, n_cand, device=teacher.device)
    for s in range(0, n, chunk):
        block = bank[s : s + chunk] @ bank.T
        block[torch.arange(block.shape[0]), torch.arange(s, s + block.shape[0])] = float("-inf")
        v, p = torch.topk(block, n_cand, dim=1)
        ids[s : s + chunk], sims[s : s + chunk] = rows[p], v
    return ids, sims


class NeighbourMemory(_Fifo):
    """S-XBM with the retrieval precomputed: a FIFO of row ids over a fixed table of frozen rows.

    The memory only ever holds frozen features, so the teacher similarities between any two rows never
    change: each row's nearest rows can be ranked once (``teacher_neighbours``) and a retrieval is then
    "the first k of my ranked candidates that are in the memory now". This returns exactly what
    ``CrossBatchMemory.topk`` returns for the same FIFO content whenever each row's candidate list
    reaches past its k-th in-memory neighbour (always, once the memory holds every candidate), at a
    cost of O(k) per anchor instead of a scan of the whole memory in the teacher's dimension. A row
    held twice (re-enqueued before its older copy left) counts once.
    """

    def __init__(self, size: int, cand_ids: torch.Tensor, cand_sims: torch.Tensor, rows: torch.Tensor,
                 n_rows: int) -> None:
        device = cand_ids.device
        super().__init__(size, device)
        # row id -> its line in the candidate lists (which hold only ``rows``)
        self.cand_ids, self.cand_sims = cand_ids, cand_sims
        self.line_of = torch.full((n_rows,), -1, dtype=torch.long, device=device)
        self.line_of[rows] = torch.arange(len(rows), device=device)
        # FIFO bookkeeping: the queue position at which each row was last enqueued (-1: never)
        self.slot_of = torch.full((n_rows,), -1, dtype=torch.long, device=device)

    @torch.no_grad()
    def enqueue(self, ids: torch.Tensor) -> None:
        """Append rows by id, overwriting the oldest entries once full."""
        n = ids.shape[0]
        if n >= self.size:
            ids, n = ids[-self.size :], self.size
        pos = self._take_slots(n)
        old = self.ids[pos]
        held = old >= 0
        old, old_pos = old[held], pos[held]
        # an overwritten entry takes its row out of the memory only if it was that row's latest copy
        self.slot_of[old[self.slot_of[old] == old_pos]] = -1
        self.ids[pos] = ids
        self.slot_of[ids] = pos

    @torch.no_grad()
    def topk(self, query_ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The top-k in-memory neighbours of each query row: (row ids (B, k), teacher sims (B, k),
        valid (B, k) bool). Ids are -1 and sims 0 where fewer than k candidates are in memory."""
        lines = self.line_of[query_ids]
        if bool((lines < 0).any()):
            raise ValueError("NeighbourMemory.topk: query_ids must be rows the candidate lists were ranked for")
        cand = self.cand_ids.index_select(0, lines)
        in_mem = self.slot_of[cand] >= 0
        # keep the first k in-memory candidates of each row, in rank order
        take = in_mem & (torch.cumsum(in_mem, dim=1) <= k)
        k = min(k, cand.shape[1])
        order = torch.argsort((~take).to(torch.int8), dim=1, stable=True)[:, :k]
        ids = cand.gather(1, order)
        sims = self.cand_sims.index_select(0, lines).gather(1, order)
        valid = take.gather(1, order)
        return ids.masked_fill(~valid, -1), sims.masked_fill(~valid, 0.0), valid

    @torch.no_grad()
    def sample(self, query_ids: torch.Tensor, pool: int, k: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``k`` of each query row's top-``pool`` in-memory neighbours, drawn uniformly without replacement
        (all of them, padded invalid, when fewer are in memory): (row ids (B, k), teacher sims, valid), as
        ``topk(query_ids, pool)`` followed by a uniform draw of k valid entries, without sorting the lists."""
        lines = self.line_of[query_ids]
        if bool((lines < 0).any()):
            raise ValueError("NeighbourMemory.sample: query_ids must be rows the candidate lists were ranked for")
        cand = self.cand_ids.index_select(0, lines)
        in_mem = self.slot_of[cand] >= 0
        take = in_mem & (torch.cumsum(in_mem, dim=1) <= pool)
        keys = torch.rand(take.shape, generator=generator).to(take.device) + take.float()
        pick = torch.topk(keys, min(k, cand.shape[1]), dim=1).indices
        valid = take.gather(1, pick)
        ids = cand.gather(1, pick).masked_fill(~valid, -1)
        sims = self.cand_sims.index_select(0, lines).gather(1, pick).masked_fill(~valid, 0.0)
        return ids, sims, valid
