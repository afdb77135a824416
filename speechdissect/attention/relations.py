"""Phone relation maps of attention heads (Yang, Liu & Lee, 2020).

For a head with map ``A [T, T]`` and per-frame phone labels ``y``:

``P'[m, n] = E_u[(1/T) sum_q sum_k 1[y_q = m] 1[y_k = n] A[q, k]]``
    how much attention queries of phone ``m`` pay to keys of phone ``n``;
``P_U[m, n]``
    the same with the uniform map ``A = 1/T`` — what phone frequencies alone
    would produce, ``E_u[c_m c_n / T^2]`` with ``c`` the phone counts;
``P = (P' - P_U) / P_U``
    relative excess over that baseline (NaN where ``P_U = 0``, i.e. a phone pair
    never co-occurs in an utterance);
``C[n] = mean_m P[m, n]``
    concentration: how much the head attends to phone ``n`` whatever the query
    (NaN entries of ``P`` are skipped; all-NaN columns give NaN).

With one-hot labels ``Y [T, M]`` the sum is ``Y^T A Y / T``, computed for all
heads of a layer in one ``einsum``. Frames whose label is not in the phone list
(``sil``, ``spn`` when using the 39 CMU phones) have an all-zero row in ``Y``:
they still count in ``T`` and in the softmax mass, but contribute to no cell.
``E_u`` is the plain mean over utterances, the same utterances for ``P'`` and
``P_U`` so the ratio compares like with like.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["CMU39", "one_hot", "relation_sums", "PhoneRelations"]

#: The 39 CMU/ARPAbet phones without stress, as written in the label table.
CMU39: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY",
    "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P",
    "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip


def one_hot(labels: Sequence, phones: Sequence[str]) -> np.ndarray:
    """``[T, M]`` float one-hot matrix; labels outside ``phones`` give zero rows."""
    index = {p: i for i, p in enumerate(phones)}
    idx = np.fromiter((index.get(l, -1) for l in labels), dtype=np.int64, count=len(labels))
    Y = np.zeros((idx.size, len(phones)), dtype=np.float64)
    known = idx >= 0
    Y[np.flatnonzero(known), idx[known]] = 1.0
    return Y


def relation_sums(A: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One utterance's ``(P', P_U)`` terms for a map or a batch of maps.

    Parameters
    ----------
    A
        ``[..., T, T]`` attention maps.
    Y
        ``[T, M]`` one-hot labels (see :func:`one_hot`).

    Returns
    -------
    observed
        ``[..., M, M]``, ``(1/T) Y^T A Y``.
    uniform
        ``[M, M]``, ``(1/T^2) c c^T`` with ``c = Y.sum(0)`` (``A = 1/T``).
    """
    T = Y.shape[0]
    if A.shape[-1] != T or A.shape[-2] != T:
        raise ValueError(f"attention maps are {A.shape[-2]}x{A.shape[-1]} but there are {T} frame labels")
    A64 = np.asarray(A, dtype=np.float64)
    observed = np.einsum("qm,...qk,kn->...mn", Y, A64, Y, optimize=True) / T
    c = Y.sum(axis=0)
    uniform = np.outer(c, c) / float(T * T)
    return observed, uniform


class PhoneRelations:
    """Streaming accumulator of phone relation maps for every head.

    Parameters
    ----------
    phones
        Phone inventory (rows/columns of the maps); defaults to :data:`CMU39`.
    """

    def __init__(self, phones: Sequence[str] = CMU39) -> None:
        self.phones: tuple[str, ...] = tuple(phones)
        if len(set(self.phones)) != len(self.phones):
            raise ValueError("phone list has duplicates")
        self.n_utterances = 0
        self._observed: np.ndarray | None = None  # [L, H, M, M]
        self._uniform = np.zeros((len(self.phones), len(self.phones)))

    def update(self, stack: np.ndarray, labels: Sequence) -> None:
        """Add one utterance: ``stack [n_layers, n_heads, T, T]`` and ``T`` frame phone labels."""
        if stack.ndim != 4:
            raise ValueError(f"expected an attention stack [n_layers, n_heads, T, T], got shape {stack.shape}")
        Y = one_hot(labels, self.phones)
        L, H = stack.shape[:2]
        if self._observed is None:
            self._observed = np.zeros((L, H, len(self.phones), len(self.phones)))
        elif self._observed.shape[:2] != (L, H):
            raise ValueError(f"stack has {L} layers x {H} heads, earlier stacks had {self._observed.shape[:2]}")
        uniform = None
        for layer in range(L):  # per layer keeps the float64 copy to H*T*T
            obs, uniform = relation_sums(stack[layer], Y)
            self._observed[layer] += obs
        assert uniform is not None
        self._uniform += uniform
        self.n_utterances += 1

    def merge(self, other: "PhoneRelations") -> "PhoneRelations":
        """Fold another accumulator (same phone list) into this one."""
        if other.phones != self.phones:
            raise ValueError("cannot merge PhoneRelations with different phone lists")
        if other._observed is None:
            return self
        if self._observed is None:
            self._observed = other._observed.copy()
        else:
            self._observed += other._observed
        self._uniform += other._uniform
        self.n_utterances += other.n_utterances
        return self

    def _check(self) -> np.ndarray:
        if self._observed is None or self.n_utterances == 0:
            raise ValueError("PhoneRelations has seen no utterances; call update() first")
        return self._observed

    def observed(self) -> np.ndarray:
        """``P'`` per head, ``[n_layers, n_heads, M, M]``."""
        return self._check() / self.n_utterances

    def uniform(self) -> np.ndarray:
        """Uniform-attention baseline ``P_U``, ``[M, M]`` (the same for every head)."""
        self._check()
        return self._uniform / self.n_utterances

    def relation(self) -> np.ndarray:
        """``P = (P' - P_U) / P_U`` per head, ``[n_layers, n_heads, M, M]``; NaN where ``P_U = 0``."""
        obs, uni = self.observed(), self.uniform()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(uni > 0, (obs - uni) / np.where(uni > 0, uni, 1.0), np.nan)

    def concentration(self) -> np.ndarray:
        """``C[n] = mean_m P[m, n]`` per head, ``[n_layers, n_heads, M]`` (NaN cells skipped)."""
        P = self.relation()
        valid = ~np.isnan(P)
        n = valid.sum(axis=-2)
        total = np.where(valid, P, 0.0).sum(axis=-2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    def concentration_table(self) -> pd.DataFrame:
        """Long table ``layer, head, phone, concentration`` for plotting and TSV output."""
        C = self.concentration()
        L, H, M = C.shape
        layer, head, phone = np.meshgrid(np.arange(L), np.arange(H), np.arange(M), indexing="ij")
        return pd.DataFrame(
            {
                "layer": layer.ravel(),
                "head": head.ravel(),
                "phone": np.asarray(self.phones, dtype=object)[phone.ravel()],
                "concentration": C.ravel(),
            }
        )
