"""Global magnitude pruning, and how close a pruned student comes to its teacher's sparsity pattern.

NumPy only (no JAX): the compression experiment's engine calls these on its students, and a stored result's
tables come from them. θ is a flat parameter vector (``layout``); a batch of them has leading axes.
"""

from __future__ import annotations

import itertools

import numpy as np

from l2rebound.layout import layers


def prune(theta, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """θ (..., P) with every entry of |θ| < ``threshold`` set to 0, and the mask (..., P) of the entries kept
    (1.0, in θ's dtype) and pruned (0.0). A NaN entry (a diverged run) is kept as NaN."""
    theta = np.asarray(theta)
    mask = (~(np.abs(theta) < threshold)).astype(theta.dtype)
    return np.where(mask > 0, theta, 0.0).astype(theta.dtype), mask


def teacher_support(teacher, dims: tuple[int, ...], zero_biases: bool) -> np.ndarray:
    """The teacher's non-zero pattern (..., P) as its construction makes it: every non-zero entry, less its
    biases when they were drawn as zeros (``zero_biases``). Such biases need not be 0 any more: the genericity
    projection moves them off zero (to about 1e-6 by the jitter, to multiples of ε by the margin)."""
    support = np.asarray(teacher) != 0
    return support & ~bias_mask(dims) if zero_biases else support


def bias_mask(dims: tuple[int, ...]) -> np.ndarray:
    """(P,) bool: True at the biases of a network of widths ``dims``."""
    return np.concatenate([np.repeat([False, True], [d_out * d_in, d_out]) for d_in, d_out in itertools.pairwise(dims)])


def recovery(aligned, teacher, support) -> dict[str, np.ndarray]:
    """How a pruned student, relabelled onto its teacher (``aligned`` (..., P): g·θ for the g that aligns it),
    compares with the teacher padded to its shape (``teacher`` (..., P)) and its non-zero pattern ``support``
    (..., P) bool (``teacher_support``).

    Returns, each (...,): ``support_recovered`` (bool: the student is non-zero exactly on ``support``), ``l0``
    (how many entries are non-zero in one and not the other) and ``l1`` (Σ|g·θ − θ_t|). NaN students give
    False, -1 and NaN."""
    aligned, teacher = np.broadcast_arrays(np.asarray(aligned, float), np.asarray(teacher, float))
    finite = np.isfinite(aligned).all(axis=-1)
    differ = (aligned != 0) != support
    l0 = differ.sum(axis=-1)
    return {"support_recovered": finite & (l0 == 0), "l0": np.where(finite, l0, -1),
            "l1": np.abs(aligned - teacher).sum(axis=-1)}


def alive_mask(theta, dims: tuple[int, ...]) -> list[np.ndarray]:
    """Per hidden layer l = 1..L-1, a bool array (d_l,): True for the units with at least one non-zero
    incoming weight (row of ``W_l``) and at least one non-zero outgoing weight (column of ``W_{l+1}``).
    Biases do not count: a unit missing either side adds at most a constant to the next layer.

    >>> theta = np.zeros(13)  # dims (2, 3, 1)
    >>> theta[[0, 10]] = 1.0  # W1[0, 0] and W2[0, 1]: hidden unit 0 has only an input, unit 1 only an output
    >>> alive_units(theta, (2, 3, 1))
    (0,)
    """
    return [np.any(w_in != 0, axis=1) & np.any(w_out != 0, axis=0)
            for (w_in, _), (w_out, _) in itertools.pairwise(layers(theta, dims))]


def alive_units(theta, dims: tuple[int, ...]) -> tuple[int, ...]:
    """Per hidden layer, the number of alive units (``alive_mask``'s count); () without hidden layers."""
    return tuple(int(mask.sum()) for mask in alive_mask(theta, dims))
