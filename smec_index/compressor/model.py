"""The trainable pieces of a compression stage: a residual linear adapter and the ADS selector.

A stage maps its input (n_in dims) through ``y = x + x W^T + b`` and keeps n_out of the n_in
coordinates, chosen either by ADS (learned importance) or as a prefix (Matryoshka truncation).
Everything is linear, so a chain of frozen stages collapses to one affine map ``X @ M + c`` that
is applied with numpy at query time (see ``Projection``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .._rows import normalise_rows

__all__ = ["ResidualAdapter", "DimensionSelector", "StageModel", "Projection", "relaxed_topk"]


@dataclass(frozen=True)
class Projection:
    """An affine map to a reduced space: ``normalise(X @ M + c)``; M is (D, d), c is (d,), float32."""

    M: np.ndarray
    c: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.M.shape[1])

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The un-normalised image ``X @ M + c`` (the input of a next stage)."""
        out = X @ self.M
        out += self.c
        return out

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return normalise_rows(self.raw(X), in_place=True)

    def then(self, A: np.ndarray, b: np.ndarray, idx: np.ndarray | slice) -> "Projection":
        """This projection followed by ``y = x A + b`` and the coordinate selection ``idx``."""
        A64, M64 = A.astype(np.float64), self.M.astype(np.float64)
        M = (M64 @ A64)[:, idx]
        c = (self.c.astype(np.float64) @ A64 + b.astype(np.float64))[idx]
        return Projection(np.ascontiguousarray(M, dtype=np.float32), np.ascontiguousarray(c, dtype=np.float32))

    @staticmethod
    def identity(D: int) -> "Projection":
        return Projection(np.eye(D, dtype=np.float32), np.zeros(D, dtype=np.float32))


class ResidualAdapter(nn.Module):
    """``y = x + x W^T + b`` with W and b starting at zero, so training starts from the input itself."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n, n)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, b) with ``y = x A + b``, as float32 numpy."""
        W = self.linear.weight.detach().cpu().numpy().astype(np.float64)
        A = np.eye(W.shape[0]) + W.T
        return A.astype(np.float32), self.linear.bias.detach().cpu().numpy().astype(np.float32)


def relaxed_topk(scores: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """Differentiable k-hot relaxation of top-k by k successive tempered softmaxes (Gumbel top-k).

    Each round takes a softmax over the scores with the mass already chosen masked out in log
    space; the sum of the k rounds is a soft k-hot vector that tends to the hard top-k as tau -> 0.
    """
    khot = torch.zeros_like(scores)
    onehot = torch.zeros_like(scores)
    s = scores
    for _ in range(k):
        s = s + torch.log1p(-onehot.clamp(max=1 - 1e-6))
        onehot = torch.softmax(s / tau, dim=-1)
        khot = khot + onehot
    return khot


class DimensionSelector(nn.Module):
    """ADS: learnable per-dimension importance logits; keeps ``k`` of ``n`` coordinates.

    Training draws Gumbel(0, 1) noise onto the logits and applies the Gumbel-softmax relaxation of
    top-k (``relaxed_topk``: k successive softmaxes at temperature tau, annealed by the trainer) as a
    soft mask, so every coordinate gets a gradient. (A straight-through hard mask does not work here:
    a coordinate masked to zero in both vectors of a cosine gets exactly zero gradient, so ADS could
    never discover an unselected dimension.) Inference keeps the deterministic hard top-k of the logits
    themselves: exactly k distinct coordinates, ordered by decreasing importance (ties go to the
    lower index), so a following stage sees its most important inputs first.
    """

    def __init__(self, n: int, k: int, init_logits: torch.Tensor | None = None) -> None:
        super().__init__()
        if not 0 < k <= n:
            raise ValueError(f"DimensionSelector: k={k} must be in 1..{n}")
        self.n, self.k = n, k
        self.logits = nn.Parameter(init_logits.clone().float() if init_logits is not None else torch.zeros(n))

    def indices(self) -> np.ndarray:
        logits = self.logits.detach().cpu().numpy()
        return np.argsort(-logits, kind="stable")[: self.k].astype(np.int64)

    def hard_mask(self) -> torch.Tensor:
        """The inference selection as a 0/1 mask over the n coordinates (no noise, no gradient)."""
        m = torch.zeros(self.n, device=self.logits.device)
        m[torch.as_tensor(self.indices(), device=self.logits.device)] = 1.0
        return m

    def mask(self, tau: float, generator: torch.Generator | None = None, noise: float = 1.0) -> torch.Tensor:
        """A relaxed k-hot mask over the n coordinates for one training step (sums to k; hard as tau -> 0)."""
        u = torch.rand(self.n, generator=generator).to(self.logits.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-10)))
        return relaxed_topk(self.logits + noise * gumbel, self.k, tau)


class StageModel(nn.Module):
    """One trainable unit: a shared residual adapter over n_in dims and one output per target dim.

    Each output keeps ``d`` coordinates of the adapter output, by ADS (``ads=True``) or by prefix.
    ``forward_train`` returns, per output dim, a tensor whose cosine similarities equal those of the
    selected coordinates (a masked n_in vector under ADS, the prefix slice otherwise).
    """

    def __init__(self, n_in: int, out_dims: tuple[int, ...], ads: bool, init_logits: torch.Tensor | None = None):
        super().__init__()
        self.n_in, self.out_dims, self.ads = n_in, tuple(out_dims), ads
        self.adapter = ResidualAdapter(n_in)
        self.selectors = nn.ModuleDict(
            {str(d): DimensionSelector(n_in, d, init_logits) for d in out_dims if ads and d < n_in}
        )

    def sample_masks(self, tau: float | None, generator: torch.Generator | None = None) -> dict[int, torch.Tensor]:
        """One training step's ADS masks (shared by every row of the step); ``tau=None`` gives the
        fixed inference selection (used once the selection is settled)."""
        if tau is None:
            return {int(d): sel.hard_mask() for d, sel in self.selectors.items()}
        return {int(d): sel.mask(tau, generator) for d, sel in self.selectors.items()}

    def forward_train(self, x: torch.Tensor, masks: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        y = self.adapter(x)
        out: dict[int, torch.Tensor] = {}
        for d in self.out_dims:
            if d == self.n_in:
                out[d] = y
            elif d in masks:
                out[d] = y * masks[d]
            else:
                out[d] = y[:, :d]
        return out

    def forward_selected(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The inference outputs, with gradient: per output dim, the kept coordinates only.

        Equal in cosine to ``forward_train`` under the hard selection, but with a single output
        smaller than the input only the kept rows of the adapter are computed (d x n_in, not n_in^2).
        """
        if len(self.out_dims) == 1 and self.out_dims[0] < self.n_in:
            d = self.out_dims[0]
            lin = self.adapter.linear
            if self.keeps_prefix(d):  # the leading coordinates: slices, not gathers (and their scatters back)
                return {d: x[:, :d] + nn.functional.linear(x, lin.weight[:d], lin.bias[:d])}
            idx = torch.as_tensor(self.selection(d), device=x.device)
            return {d: x[:, idx] + nn.functional.linear(x, lin.weight[idx], lin.bias[idx])}
        return self.forward_eval(x)

    @contextlib.contextmanager
    def prefix_rows_only(self) -> Iterator[None]:
        """Within the block a model whose single output keeps the adapter's first d < n_in coordinates holds only
        those d rows of the adapter as parameters (what ``forward_selected`` reads); the other rows, which reach
        no output, are put back on exit. An optimizer made inside updates d x n_in weights, not n_in^2, with the
        same floats for the d rows. Other models are left as they are."""
        lin = self.adapter.linear
        if self.ads or len(self.out_dims) != 1 or self.out_dims[0] >= self.n_in:
            yield
            return
        d = self.out_dims[0]
        rest_w, rest_b = lin.weight.detach()[d:].clone(), lin.bias.detach()[d:].clone()
        lin.weight = nn.Parameter(lin.weight.detach()[:d].clone())
        lin.bias = nn.Parameter(lin.bias.detach()[:d].clone())
        try:
            yield
        finally:
            lin.weight = nn.Parameter(torch.cat([lin.weight.detach(), rest_w]))
            lin.bias = nn.Parameter(torch.cat([lin.bias.detach(), rest_b]))

    def forward_eval(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        y = self.adapter(x)
        # a prefix is a view of y, not a gather: the D -> D stage's y[:, arange(D)] copied every row and its
        # backward scattered them back (index_put, 12% of that stage's CPU); same floats
        return {d: y[:, :d] if self.keeps_prefix(d) else y[:, self.selection(d)] for d in self.out_dims}

    def keeps_prefix(self, d: int) -> bool:
        """Whether output dim ``d`` keeps the adapter's first d coordinates (no ADS choice, or all of them)."""
        return d == self.n_in or not self.ads

    def selection(self, d: int) -> np.ndarray:
        """Indices of the adapter coordinates kept for output dim ``d``."""
        if self.keeps_prefix(d):
            return np.arange(d, dtype=np.int64)
        return self.selectors[str(d)].indices()
