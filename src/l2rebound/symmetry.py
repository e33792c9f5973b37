"""The symmetry group of a tanh network and distances modulo it.

A network with ``dims = (d0, d1, ..., dL)`` has L-1 hidden layers. Permuting the units of a hidden layer
and flipping the sign of a hidden unit leave its function unchanged (tanh is odd); together these
generate a group of size ∏_l d_l! · 2^{d_l}.

**Convention.** A group element ``g = Symmetry(perms, signs)`` holds, for each hidden layer l = 1..L-1,
a permutation ``perms[l-1]`` (shape (d_l,), ints) and signs ``signs[l-1]`` (shape (d_l,), ±1.0). Acting
on θ, **new unit i of layer l is old unit perms[l-1][i] times signs[l-1][i]**::

    W'_l[i, :]   = signs[i] · W_l[perms[i], :]        (its incoming row; columns as set by layer l-1)
    b'_l[i]      = signs[i] · b_l[perms[i]]
    W'_{l+1}[:, i] = signs[i] · W_{l+1}[:, perms[i]]  (its outgoing column)

The output layer's rows and bias are never touched. ``compose(h, g)`` is "first g, then h", so
``apply(compose(h, g), θ) == apply(h, apply(g, θ))``.

Everything here is NumPy (``scipy.optimize.linear_sum_assignment``): the functions accept NumPy or JAX
arrays and return NumPy float arrays of θ's dtype: ``apply``, ``align``, ``l2_aligned``, ``normal_form``,
``normal_form_distance``, ``is_equivalent``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from l2rebound.nets import num_params, unflatten

MAX_SWEEPS = 50


class Symmetry(NamedTuple):
    """One element of the symmetry group: per hidden layer l = 1..L-1, ``perms[l-1]`` (d_l,) ints and
    ``signs[l-1]`` (d_l,) ±1.0. New unit i of layer l is old unit ``perms[l-1][i]`` times
    ``signs[l-1][i]``."""

    perms: tuple
    signs: tuple


# ----------------------------------------------------------------------------------------------------------
# group elements


def identity(dims: tuple[int, ...]) -> Symmetry:
    """The neutral element for ``dims``."""
    hidden = dims[1:-1]
    return Symmetry(tuple(np.arange(d) for d in hidden), tuple(np.ones(d) for d in hidden))


def random_symmetry(rng, dims: tuple[int, ...]) -> Symmetry:
    """A uniformly random group element. ``rng``: a ``np.random.Generator`` or an int seed."""
    rng = np.random.default_rng(rng)
    hidden = dims[1:-1]
    return Symmetry(
        tuple(rng.permutation(d) for d in hidden), tuple(rng.choice(np.array([-1.0, 1.0]), size=d) for d in hidden)
    )


def is_identity(g: Symmetry) -> bool:
    """True when ``g`` is the neutral element."""
    return all(np.array_equal(p, np.arange(len(p))) and np.all(np.asarray(s) == 1) for p, s in zip(*g))


def compose(h: Symmetry, g: Symmetry) -> Symmetry:
    """First g, then h: ``apply(compose(h, g), θ) == apply(h, apply(g, θ))``."""
    perms, signs = [], []
    for ph, sh, pg, sg in zip(h.perms, h.signs, g.perms, g.signs):
        ph, pg = np.asarray(ph), np.asarray(pg)
        perms.append(pg[ph])
        signs.append(np.asarray(sg)[ph] * np.asarray(sh))
    return Symmetry(tuple(perms), tuple(signs))


def inverse(g: Symmetry) -> Symmetry:
    """``apply(inverse(g), apply(g, θ)) == θ``."""
    perms, signs = [], []
    for p, s in zip(g.perms, g.signs):
        inv = np.argsort(np.asarray(p))
        perms.append(inv)
        signs.append(np.asarray(s)[inv])
    return Symmetry(tuple(perms), tuple(signs))


# ----------------------------------------------------------------------------------------------------------
# the action on θ (NumPy)


def _layers(theta, dims):
    """θ (P,) -> list of NumPy ``(W (d_l, d_{l-1}), b (d_l,))``."""
    theta = np.asarray(theta)
    if theta.shape != (num_params(dims),):
        raise ValueError(f"θ has shape {theta.shape}, dims {dims} need ({num_params(dims)},)")
    return unflatten(theta, dims)


def _flat(layers) -> np.ndarray:
    return np.concatenate([np.concatenate([w.reshape(-1), b]) for w, b in layers])


def _apply_layers(g: Symmetry, layers):
    out = []
    n_layers = len(layers)
    for l, (w, b) in enumerate(layers):
        if l > 0:  # input columns follow hidden layer l (0-based l-1)
            p, s = np.asarray(g.perms[l - 1]), np.asarray(g.signs[l - 1], w.dtype)
            w = w[:, p] * s[None, :]
        if l < n_layers - 1:
            p, s = np.asarray(g.perms[l]), np.asarray(g.signs[l], w.dtype)
            w, b = w[p, :] * s[:, None], b[p] * s
        out.append((w, b))
    return out


def apply(g: Symmetry, theta, dims: tuple[int, ...]) -> np.ndarray:
    """g·θ: θ (P,) -> θ' (P,) (NumPy, θ's dtype). Exact in floating point (only moves and sign flips)."""
    return _flat(_apply_layers(g, _layers(theta, dims)))


# ----------------------------------------------------------------------------------------------------------
# alignment (NumPy, exact for one hidden layer)


def _features(layers, h, incoming=True, outgoing=True):
    """Per unit of hidden layer h (0-based): [incoming row, bias, outgoing column] -> (d_h, F)."""
    w, b = layers[h]
    parts = []
    if incoming:
        parts += [w, b[:, None]]
    if outgoing:
        parts.append(layers[h + 1][0].T)
    return np.concatenate(parts, axis=1)


def _assign(v, u):
    """Best matching of student features v (d, F) to teacher features u (d, F) up to sign.
    Returns the relative Symmetry factor (perm, signs) for this layer: new unit j = old unit perm[j]·signs[j].
    Cost of i -> j: min_s ‖s v_i − u_j‖² = ‖v_i‖² + ‖u_j‖² − 2|<v_i, u_j>|."""
    gram = v @ u.T
    cost = (v * v).sum(1)[:, None] + (u * u).sum(1)[None, :] - 2 * np.abs(gram)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), int)
    perm[cols] = rows
    signs = np.where(gram[perm, np.arange(len(perm))] >= 0, 1.0, -1.0)
    return perm, signs


def _with_layer(g: Symmetry, h, perm, sign) -> Symmetry:
    """g followed by (perm, sign) on hidden layer h only."""
    perms = [np.arange(len(p)) for p in g.perms]
    signs = [np.ones(len(p)) for p in g.perms]
    perms[h], signs[h] = perm, sign
    return compose(Symmetry(tuple(perms), tuple(signs)), g)


def _distance(g, s_layers, t_flat):
    return float(np.linalg.norm(_flat(_apply_layers(g, s_layers)) - t_flat))


def _greedy(s_layers, t_layers, forward: bool) -> Symmetry:
    """One-sided greedy start. Forward: layers 1, 2, ... matched on incoming row + bias (inputs already
    aligned). Backward: last hidden layer first, matched on the outgoing column (rows already aligned)."""
    n_hidden = len(s_layers) - 1
    g = Symmetry(tuple(np.arange(len(s_layers[h][1])) for h in range(n_hidden)),
                 tuple(np.ones(len(s_layers[h][1])) for h in range(n_hidden)))
    for h in range(n_hidden) if forward else reversed(range(n_hidden)):
        cur = _apply_layers(g, s_layers)
        perm, signs = _assign(_features(cur, h, forward, not forward), _features(t_layers, h, forward, not forward))
        g = _with_layer(g, h, perm, signs)
    return g


def _sweep(g, s_layers, t_layers, t_flat, max_sweeps):
    """Alternating exact assignments (block coordinate descent), accepting only strict improvements,
    until a whole sweep changes nothing (or ``max_sweeps``)."""
    n_hidden = len(s_layers) - 1
    dist = _distance(g, s_layers, t_flat)
    for _ in range(max_sweeps):
        changed = False
        for h in range(n_hidden):
            cur = _apply_layers(g, s_layers)
            perm, signs = _assign(_features(cur, h), _features(t_layers, h))
            if np.array_equal(perm, np.arange(len(perm))) and np.all(signs == 1):
                continue
            g_new = _with_layer(g, h, perm, signs)
            d_new = _distance(g_new, s_layers, t_flat)
            if d_new < dist:
                g, dist, changed = g_new, d_new, True
        if not changed:
            break
    return g, dist


def align(theta_s, theta_t, dims: tuple[int, ...], max_sweeps: int = MAX_SWEEPS) -> tuple[Symmetry, float]:
    """Minimise ‖g·θ_s − θ_t‖₂ over the group. θ_s, θ_t: (P,). Returns ``(g, distance)`` with
    ``distance == ‖apply(g, θ_s) − θ_t‖₂`` (computed that way).

    One hidden layer: exact (one linear assignment; the output bias is untouched by every g). Deeper:
    alternating exact per-layer assignments (each layer's cost uses the other layers' current alignment
    for its incoming columns and outgoing rows), swept until no layer changes, from three starts: the
    identity, a forward one-sided greedy and a backward one-sided greedy; the best is kept, and the raw
    identity itself is a candidate, so the result never exceeds the raw ℓ₂ distance. A symmetric copy of
    a teacher whose units are distinguishable (generic) is recovered exactly by the forward greedy."""
    s_layers, t_layers = _layers(theta_s, dims), _layers(theta_t, dims)
    t_flat = _flat(t_layers)
    g0 = identity(dims)
    best = (g0, _distance(g0, s_layers, t_flat))
    if len(dims) <= 2:
        return best
    starts = [g0]
    if len(dims) > 3:
        starts += [_greedy(s_layers, t_layers, forward=True), _greedy(s_layers, t_layers, forward=False)]
    for k, start in enumerate(starts):
        if any(_equal(start, earlier) for earlier in starts[:k]):
            continue  # the sweep is deterministic: a repeated start ends where its first copy did
        g, d = _sweep(start, s_layers, t_layers, t_flat, max_sweeps)
        if d < best[1]:
            best = (g, d)
    return best


def _equal(g: Symmetry, h: Symmetry) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(g.perms + g.signs, h.perms + h.signs))


def l2_aligned(theta_s, theta_t, dims: tuple[int, ...]) -> float:
    """min_g ‖g·θ_s − θ_t‖₂ (exact for one hidden layer; see ``align``)."""
    return align(theta_s, theta_t, dims)[1]


def is_equivalent(theta1, theta2, dims: tuple[int, ...], tol: float = 1e-10) -> bool:
    """True when some g maps θ1 onto θ2 up to ``tol · max(1, ‖θ2‖₂)`` (via ``l2_aligned``)."""
    return l2_aligned(theta1, theta2, dims) <= tol * max(1.0, float(np.linalg.norm(np.asarray(theta2))))


# ----------------------------------------------------------------------------------------------------------
# normal form (the Julia original's canonical representative)


def _first_nonzero_sign(m):
    """Per row of m (d, F): the sign of its first non-zero entry, 0 when the row is all zero."""
    nz = m != 0
    first = np.argmax(nz, axis=1)
    vals = m[np.arange(m.shape[0]), first]
    return np.where(nz.any(axis=1), np.sign(vals), 0.0)


def normal_form_symmetry(theta, dims: tuple[int, ...]) -> Symmetry:
    """The g with ``normal_form(θ) == apply(g, θ)``. Per hidden layer:

    1. signs: every bias becomes ≥ 0. Tie rule for a zero bias: make the first non-zero entry of the
       unit's outgoing column (W_{l+1}[:, i], top to bottom) positive; if that column is all zero, the
       first non-zero entry of its incoming row; if the unit is all zero, keep it.
    2. order: units sorted by |b| descending; ties broken by the outgoing column, compared
       lexicographically (top entry first), descending; then by the incoming row likewise; then by the
       original index (stable).

    Layers are processed last to first, so that a tie break in layer l reads an outgoing column whose
    rows (the units of layer l+1) are already in canonical order and sign. Without ties (distinct
    non-zero |b|, as in ℱ) the result is the same in any order, because layer l's choice depends only
    on b_l; it is then a canonical form: equal for θ and g·θ."""
    layers = _layers(theta, dims)
    n_hidden = len(dims) - 2
    perms, signs = [None] * n_hidden, [None] * n_hidden
    for h in reversed(range(n_hidden)):
        w, b = layers[h]
        w_next = layers[h + 1][0]
        if h + 1 < n_hidden:  # rows of W_{h+1} as canonicalised by layer h+1
            w_next = w_next[perms[h + 1], :] * signs[h + 1][:, None]
        out_cols, in_rows = w_next.T, w
        s = np.sign(b).astype(float)
        if not s.all():  # the tie rule, for zero biases only
            s = np.where(s == 0, _first_nonzero_sign(out_cols), s)
            s = np.where(s == 0, _first_nonzero_sign(in_rows), s)
            s = np.where(s == 0, 1.0, s)
        size = np.abs(b)
        perm = np.argsort(-size, kind="stable")
        if (np.diff(size[perm]) == 0).any():  # ties in |b|: broken by the columns, then the rows
            oc, ir = out_cols * s[:, None], in_rows * s[:, None]
            # np.lexsort: the last row of keys is the primary key; negated for descending order
            perm = np.lexsort(-np.vstack([ir[:, ::-1].T, oc[:, ::-1].T, size]))
        perms[h], signs[h] = perm, s[perm]
    return Symmetry(tuple(perms), tuple(signs))


def normal_form(theta, dims: tuple[int, ...]) -> np.ndarray:
    """The Julia original's canonical representative of θ (P,) -> (P,): see ``normal_form_symmetry``."""
    return apply(normal_form_symmetry(theta, dims), theta, dims)


def normal_form_distance(theta_s, theta_t, dims: tuple[int, ...]) -> float:
    """‖nf(θ_s) − nf(θ_t)‖₂. An upper bound on the group minimum min_g ‖g·θ_s − θ_t‖₂ (nf(θ_s) = g_s θ_s,
    nf(θ_t) = g_t θ_t), which ``l2_aligned`` computes exactly for one hidden layer only."""
    return float(np.linalg.norm(normal_form(theta_s, dims) - normal_form(theta_t, dims)))
