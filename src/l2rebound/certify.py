"""Certified ℓ₂ distance modulo the symmetry group of a tanh network (branch and bound).

``symmetry.align`` is exact for one hidden layer only. Here, for any depth, ``certified_align`` returns
both an achieved distance (``upper``, with the group element that achieves it) and a certified lower
bound (``lower``) on

    min_g ‖g·θ_s − θ_t‖₂        over the group of signed permutations of every hidden layer,

equal to each other (``optimal``) when the search finishes within its ``Budget``. Layout and group
action as in ``symmetry`` (new unit i of hidden layer l is old unit ``perms[l-1][i]`` times
``signs[l-1][i]``).

**The relaxation.** ‖g·θ_s − θ_t‖² is a sum of squared entry differences. A search node fixes the
signed assignment of some hidden units (target unit i of the teacher takes source unit j of the student
with sign σ); every other unit is free. Each squared entry is counted exactly once:

- entries all of whose units are fixed (or are inputs / outputs): an exact constant;
- a bias of a free unit, or a weight between a free unit and a fixed one: it depends on one free pair
  (i, j, σ) only, so it enters that pair's cost exactly;
- a weight between two free units of adjacent layers (the "free–free block" of that weight matrix):
  bounded from below, in one of two ways.

  *Rearrangement* (cheap): for one row of the block (a free unit i, paired with j), the minimum over
  all signed permutations of the free columns of Σ_k (σ_k b_π(k) − a_k)² is Σ_r (sort|a|_r − sort|b|_r)²;
  likewise per column; half of the block is charged to the rows' pairs and half to the columns' pairs.

  *Gilmore–Lawler* (tighter): the block between a branched layer c and a neighbour o goes to c's pairs.
  For the pair (i, j, σ) of c, the bound is the minimum over signed assignments (k → m, τ_k) of o of
  Σ_k [(σ τ_k S[j, m] − T[i, k])² + o's own pair cost (k, m, τ_k) / n_c], an assignment problem solved
  exactly by dynamic programming over column subsets for small o (else bounded by row and column
  reduction). o's own costs are thereby shared among c's n_c free pairs and need no assignment of
  their own. Nodes with small blocks (``STRONG_FIRST_SIZE``, about 11 units a side) get this bound at
  once; wider ones the rearrangement bound first and this one only when that decides nothing, and not
  at all beyond ``STRONG_MAX_SIZE`` (about 44 units a side: its tensors grow as the fourth power).

A pair's cost is then minimised over its sign, and each layer's free units are matched by one linear
assignment (``scipy.optimize.linear_sum_assignment``); the constant plus the layers' assignment minima
bound the node from below. When no two adjacent layers have free units the bound is exact, and its
assignment is the node's optimum. Every node also yields a feasible group element (its assignments),
which may improve the incumbent.

**The search.** The incumbent starts as the best of the identity, ``symmetry.align``, the root's
assignment and two dives (fixing whole layers first to last, and last to first, on the relaxation),
each polished by coordinate descent (one exact assignment per layer, the others fixed). Branching fixes
units only in a minimum-weight set of layers whose fixing makes the bound exact (a vertex cover of the
chain of hidden layers: the middle one of three), or in the other layers when they are one too and give
the first node that is branched on a higher Gilmore–Lawler bound (``_bounds``). Nodes are explored best
bound first; a node budget that cannot raise the lower bound by more than ``FUTILE_SHARE`` of the gap is
not spent (``_Search.futile``). Dual potentials
of each assignment give reduced costs, hence a certified bound for every child "fix (i, j, σ)" without
solving it: a child whose bound reaches the incumbent is never created, a unit with a single surviving
option is fixed outright (reduced-cost fixing), and otherwise the teacher or student unit with the
fewest surviving options is branched on (ties: the largest gap between its best and second-best
option's bounds). With the rearrangement bound, each child's bound also looks ahead: the weights
between the unit it fixes and the neighbouring layers become exact, which raises the neighbours'
assignment bounds (see ``_lookahead``); a wrong child is usually discarded without being evaluated.
Where the Gilmore–Lawler bound comes first and the blocks are narrow, each child is instead bounded by
its own children on one more unit, all of a node's grandchildren bounded in one batch (``_screen``,
``_screen_children``): most children then die without an evaluation of their own.

**Floating point.** All costs are sums of squared differences of the parameters (never differences of
large inner products), so their rounding errors are relative to the distances themselves. A node's
bound is multiplied by ``1 − κ``, κ = 2 (6 max(dims) + 2 len(dims) + 16) u (u the unit roundoff), which
covers the rounding of its sums of non-negative terms (the entries between fixed units, the bulk of it
deep in the tree, are summed exactly rounded with ``math.fsum``), and each assignment's dual certificate
carries an absolute margin of 4u times the magnitudes of the entries and potentials it combines (so the
bound does not trust the assignment solver's optimality). ``lower`` is clamped at 0 and at ``upper``.
For a symmetric copy both are exactly 0.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from l2rebound.layout import layers

if TYPE_CHECKING:  # symmetry imports JAX: only at the first call (see ``certified_align``)
    from l2rebound.symmetry import Symmetry

UNIT_ROUNDOFF = np.finfo(np.float64).eps / 2
ROW_SHARE = 0.5
"""Share of each free–free weight block charged to its rows' pairs by the rearrangement bound (the rest
to its columns' pairs)."""
EXACT_INNER_MAX = 8
"""Gilmore–Lawler inner assignments up to this size are solved exactly (dynamic programme over column
subsets), larger ones bounded by row and column reduction."""
STRONG_FIRST_SIZE = 20_000
"""Nodes whose Gilmore–Lawler tensors (Σ over free–free blocks of (block size)²) are at most this get
that bound at once; larger ones try the rearrangement bound first."""
STRONG_MAX_SIZE = 4_000_000
"""Above this the Gilmore–Lawler bound is not used (its tensors take 8 bytes × 4 × this)."""
POLISH_SWEEPS = 50
INNER_CHUNK = 16_000
"""Elements per temporary tensor of ``_gilmore_lawler``: under 128 KiB, the allocator's default threshold for
mapping memory afresh (and unmapping it) on every allocation."""
FUTILE_SHARE = 0.05
"""A node-limited search stops early when its remaining nodes cannot raise the lower bound by more than this
share of the gap (``_Search.futile``): far from the teacher, a few nodes among dozens of equally low ones."""
SCREEN_MAX_SIZE = 150_000
"""Children are screened (``_screen_children``) only while the batch's Gilmore–Lawler tensors (Σ over the
nodes it bounds of ``_gilmore_size`` of their parent) stay within this: beyond, a node's evaluation would
cost much more than the nodes it saves."""
SCREEN_MAX_WIDTH = 6
"""Children are screened only where no free–free block has more free units a side than this: the screens'
inner assignments are dynamic programmes over 2^n column sets."""
LOOKAHEAD_CHUNK = 200_000
"""Elements per temporary array of ``_lookahead``."""


class Budget(NamedTuple):
    """Limits of one ``certified_align`` call; ``None`` means unlimited. ``seconds``: wall time of the
    whole call (the initial heuristic included, and in a process's first call the import of JAX, which
    ``symmetry`` needs; checked between nodes, so a call overruns by at most one node's evaluation).
    ``nodes``: at most this many nodes the search evaluates beyond the root, which is evaluated unless
    ``seconds`` is spent before it (0: the root's bound only); fewer where they cannot raise the lower
    bound by more than ``FUTILE_SHARE`` of the gap. With ``nodes`` alone the result is deterministic."""

    seconds: float | None = None
    nodes: int | None = None


class Alignment(NamedTuple):
    """Result of ``certified_align``. Distances are ℓ₂ norms of whole parameter vectors.

    ``symmetry``: a ``symmetry.Symmetry`` g; ``upper == ‖apply(g, θ_s) − θ_t‖₂``. ``lower``: a certified
    lower bound on min_g ‖g·θ_s − θ_t‖₂. ``optimal``: the search finished (``upper`` is the minimum, and
    ``lower`` equals it up to the floating-point margin). ``nodes``: search nodes evaluated, the root
    included. ``seconds``:
    wall time of the call."""

    symmetry: Symmetry
    upper: float
    lower: float
    optimal: bool
    nodes: int
    seconds: float

    @property
    def gap(self) -> float:
        """(upper − lower) / upper, 0 when upper is 0."""
        return (self.upper - self.lower) / self.upper if self.upper > 0 else 0.0


# ----------------------------------------------------------------------------------------------------------
# the problem


class _Problem(NamedTuple):
    """Student (s) and teacher (t) per layer: ``s_w[l]``, ``t_w[l]`` (d_{l+1}, d_l); ``s_b[l]``, ``t_b[l]``
    (d_{l+1},), l = 0..L-1 (0-based: hidden layer h is weight layer h's rows)."""

    s_w: tuple
    s_b: tuple
    t_w: tuple
    t_b: tuple
    dims: tuple
    kappa: float
    boundary: tuple  # the input and output layers in ``_order`` form: all fixed, identity


def _layers(theta, dims: tuple[int, ...]):
    """θ (P,) -> (weights, biases), float64 copies: W_l (d_l, d_{l-1}), b_l (d_l,)."""
    weights, biases = zip(*layers(np.array(theta, dtype=np.float64), dims))
    return weights, biases


def _kappa(dims) -> float:
    """The relative safety margin of every bound: each is a tree of sums of non-negative rounded terms
    (squared differences, rearranged or assigned) of depth at most about 6·max(d) + L + 15 (a pair's
    features, a Gilmore–Lawler inner assignment, the layer's assignment, the layers), and such a sum is
    within depth·u of its exact value; doubled for safety."""
    return 2.0 * (6 * max(dims) + 2 * len(dims) + 16) * UNIT_ROUNDOFF


def _problem(theta_s, theta_t, dims) -> _Problem:
    dims = tuple(int(d) for d in dims)
    s_w, s_b = _layers(theta_s, dims)
    t_w, t_b = _layers(theta_t, dims)
    boundary = tuple((np.arange(d), np.arange(d), np.ones(d), d) for d in (dims[0], dims[-1]))
    return _Problem(s_w, s_b, t_w, t_b, dims, _kappa(dims), boundary)


def _apply_flat(prob: _Problem, perms, signs) -> np.ndarray:
    """g·θ_s as a flat (P,) vector; exact (moves and sign flips only)."""
    n_hidden = len(prob.dims) - 2
    parts = []
    for l, (w, b) in enumerate(zip(prob.s_w, prob.s_b)):
        if l > 0:
            w = w[:, perms[l - 1]] * signs[l - 1][None, :]
        if l < n_hidden:
            w, b = w[perms[l], :] * signs[l][:, None], b[perms[l]] * signs[l]
        parts += [w.reshape(-1), b]
    return np.concatenate(parts)


def _teacher_flat(prob: _Problem) -> np.ndarray:
    """θ_t as a flat (P,) vector."""
    return np.concatenate([p for w, b in zip(prob.t_w, prob.t_b) for p in (w.reshape(-1), b)])


# ----------------------------------------------------------------------------------------------------------
# bounds


def _sumsq(x) -> np.ndarray:
    """Σ x² over the last axis."""
    return np.einsum("...i,...i->...", x, x)


def _rearranged(a, b) -> np.ndarray:
    """min over signed permutations of the columns of Σ_k (row_i(a)_k ± row_j(b)_π(k))², per (i, j):
    Σ_r (sort|a_i|_r − sort|b_j|_r)². a (n, m), b (n, m) -> (n, n)."""
    sa, sb = np.sort(np.abs(a), axis=1), np.sort(np.abs(b), axis=1)
    return _sumsq(sa[:, None, :] - sb[None, :, :])


class _Dual(NamedTuple):
    """A linear assignment with its dual certificate. ``cols`` (n,): row k takes column cols[k].
    ``base``: Σ_k C[k, cols[k]]. ``slack`` (n, n): a lower bound on the reduced cost of each entry (0 on
    the assignment). ``floor`` ≤ 0: min(0, min slack). Every assignment using entry (k, j) costs at least
    base + slack[k, j] + (n − 1)·floor; every assignment at least base + n·floor."""

    cols: np.ndarray
    base: float
    slack: np.ndarray
    floor: float


def _assignment(cost) -> _Dual:
    """Minimum assignment of cost (n, n) with reduced costs from potentials found by Bellman–Ford on the
    residual graph, so that the bound holds whether or not the solver's assignment is exactly optimal."""
    n = cost.shape[0]
    rows, cols = linear_sum_assignment(cost)
    own = cost[rows, cols]
    step = cost - own[:, None]  # moving row k from its column to column j
    v = np.zeros(n)  # column potentials, ≤ 0
    for _ in range(n):
        v_new = np.minimum(v, (v[cols][:, None] + step).min(axis=0))
        if not (v_new < v).any():
            break
        v = v_new
    reduced = (step + v[cols][:, None]) - v[None, :]
    # rounding of the three operations above, bounded by the magnitudes they combine (cost ≥ 0, v ≤ 0)
    err = 4 * UNIT_ROUNDOFF * (cost + (own - v[cols])[:, None] - v[None, :])
    slack = reduced - err
    slack[rows, cols] = 0.0  # exactly: C − C + v − v
    return _Dual(cols, float(own.sum()), slack, min(0.0, float(slack.min())))


class _Eval(NamedTuple):
    """A node's relaxation. Per hidden layer h: ``free[h] = (targets, sources)`` (n_h,) each; for layers
    whose pairs carry an assignment bound, ``sign[h]`` (n_h, n_h) (the better sign of each pair),
    ``penalty[h]`` (n_h, n_h) (extra cost of the other sign) and ``dual[h]`` (``None`` elsewhere).
    ``raw``: the bound before the safety factor; ``key``: the certified bound on the node's
    min ‖g·θ_s − θ_t‖². ``exact``: no free–free coupling, so the bound is the node's minimum and
    ``candidate`` (perms, signs) attains it. ``rearranged[h]``: {neighbour layer: (n_h, n_h) share of
    the rearrangement bound of their free–free block charged to layer h's pairs}."""

    free: tuple
    sign: tuple
    penalty: tuple
    dual: tuple
    rearranged: tuple
    raw: float
    key: float
    exact: bool
    candidate: tuple


class _Linear(NamedTuple):
    """The part of a node's relaxation that every bound shares. ``info[h]``: ``_split`` of hidden layer h.
    ``const``: Σ of the squared entries between fixed units (and inputs, outputs). ``plus[h]``,
    ``minus[h]`` (n_h, n_h): exact cost of the entries that touch one free unit of layer h, for the pair
    (target a, source b) at sign +1 / −1 (``None`` for a layer without free units). ``blocks``: per weight
    layer l whose rows and columns both have free units, (l, teacher block, student block), each
    (free rows, free columns) of W_l."""

    info: list
    const: float
    plus: list
    minus: list
    blocks: list


def _split(src, sgn):
    """A layer's partial assignment -> (fixed targets, their sources, their signs, free targets, free
    sources)."""
    fixed = src >= 0
    rt = np.flatnonzero(fixed)
    if rt.size in (0, src.size):  # the common nodes: a layer wholly free or wholly fixed
        every, none = np.arange(src.size), rt[:0]
        return (rt, src, sgn, none, none) if rt.size else (rt, rt, sgn[:0], every, every)
    rs = src[rt]
    used = np.zeros(src.size, bool)
    used[rs] = True
    return rt, rs, sgn[rt], np.flatnonzero(~fixed), np.flatnonzero(~used)


def _order(info):
    """Fixed units first, then free ones: (teacher order, student order, student signs, number fixed),
    each (d,); free units get sign +1 (their sign is part of the pair's cost)."""
    rt, rs, rg, ft, fs = info
    if not ft.size:
        return rt, rs, rg, rt.size
    return np.concatenate([rt, ft]), np.concatenate([rs, fs]), np.concatenate([rg, np.ones(ft.size)]), rt.size


def _linear(prob: _Problem, src, sgn) -> _Linear:
    """The exact part of the node whose partial assignment is ``src[h]`` (d_h,) ints (−1: free) and
    ``sgn[h]`` (±1, 0 where free)."""
    n_hidden = len(prob.dims) - 2
    info = [_split(src[h], sgn[h]) for h in range(n_hidden)]
    orders = [prob.boundary[0], *(_order(i) for i in info), prob.boundary[1]]
    fixed = [prob.s_b[-1] - prob.t_b[-1]]  # differences between fixed entries
    t_feat = [[] for _ in range(n_hidden)]
    s_feat = [[] for _ in range(n_hidden)]
    blocks = []
    for h in range(n_hidden):
        to, so, sg, k = orders[h + 1]
        c, a = prob.t_b[h][to], prob.s_b[h][so] * sg
        fixed.append(a[:k] - c[:k])
        t_feat[h].append(c[k:, None])
        s_feat[h].append(a[k:, None])
    for l in range(n_hidden + 1):
        # W_l with its rows (layer l) and columns (layer l-1) reordered fixed-first: every part is a slice
        (rto, rso, rsg, a), (cto, cso, csg, b) = orders[l + 1], orders[l]
        t = prob.t_w[l][rto[:, None], cto]
        s = prob.s_w[l][rso[:, None], cso] * (rsg[:, None] * csg)
        fixed.append((s[:a, :b] - t[:a, :b]).reshape(-1))
        if l < n_hidden and a < t.shape[0] and b:  # rows free, columns fixed: charged to layer l's pairs
            t_feat[l].append(t[a:, :b])
            s_feat[l].append(s[a:, :b])
        if l > 0 and b < t.shape[1] and a:  # rows fixed, columns free: charged to layer l-1's pairs
            t_feat[l - 1].append(t[:a, b:].T)
            s_feat[l - 1].append(s[:a, b:].T)
        if a < t.shape[0] and b < t.shape[1]:
            blocks.append((l, t[a:, b:], s[a:, b:]))
    plus, minus = [None] * n_hidden, [None] * n_hidden
    for h in range(n_hidden):
        if info[h][3].size:
            tf, sf = np.concatenate(t_feat[h], axis=1), np.concatenate(s_feat[h], axis=1)
            plus[h] = _sumsq(sf[None, :, :] - tf[:, None, :])
            minus[h] = _sumsq(sf[None, :, :] + tf[:, None, :])
    # summed exactly rounded: at a leaf this is the whole distance, and it stays within κ of it however wide
    # the network
    const = math.fsum((np.concatenate(fixed) ** 2).tolist())
    return _Linear(info, const, plus, minus, blocks)


def _reduction(m) -> np.ndarray:
    """A lower bound on the minimum assignment of each matrix m (..., n, n): the better of the two dual
    solutions "row minima, then column minima of the rest" and the transposed one."""
    u = m.min(axis=-1)
    by_rows = u.sum(axis=-1) + (m - u[..., :, None]).min(axis=-2).sum(axis=-1)
    v = m.min(axis=-2)
    by_cols = v.sum(axis=-1) + (m - v[..., None, :]).min(axis=-1).sum(axis=-1)
    return np.maximum(by_rows, by_cols)


@functools.cache
def _subset_tables(n: int):
    """For the assignment dynamic programme over column subsets: per level p = 1..n (rows 0..p-1
    assigned), (predecessor index at level p-1, column added), each (C(n, p), p)."""
    levels = [[0]]
    for p in range(1, n + 1):
        levels.append([mask for mask in range(1 << n) if mask.bit_count() == p])
    tables = []
    for p in range(1, n + 1):
        where = {mask: k for k, mask in enumerate(levels[p - 1])}
        cols = np.array([[m for m in range(n) if mask >> m & 1] for mask in levels[p]])
        preds = np.array([[where[mask ^ (1 << m)] for m in row] for mask, row in zip(levels[p], cols)])
        tables.append((preds, cols))
    return tables


def _exact_assignment_min(m) -> np.ndarray:
    """The minimum assignment of each matrix m (..., n, n), n ≥ 1, exactly, by dynamic programming over
    the sets of columns used (2^n n states; for small n only)."""
    f = m[..., 0, :]  # the first row's column sets are its single columns
    for row, (preds, cols) in enumerate(_subset_tables(m.shape[-1])[1:], 1):
        f = (f[..., preds] + m[..., row, :][..., cols]).min(axis=-1)
    return f[..., 0]


def _assignment_min(m) -> np.ndarray:
    """A lower bound on the minimum assignment of each matrix m (..., n, n): exact for n ≤
    ``EXACT_INNER_MAX``, else ``_reduction``."""
    return _exact_assignment_min(m) if m.shape[-1] <= EXACT_INNER_MAX else _reduction(m)


def _gilmore_lawler(tc, sc, lin_plus, lin_minus) -> np.ndarray:
    """The inner assignment problems of the Gilmore–Lawler bound of G free–free blocks, each between a
    branched layer c and a neighbour o, with o's own pair costs (already weighted by their share) folded
    in, bounded by ``_assignment_min``. tc, sc (G, n_c, n_o): the blocks as (c units, o units) of the
    teacher and the student; lin_plus, lin_minus (G, n_o, n_o): o's pair costs at sign ±1.

    For the c pair (i, j) at sign σ (index 0 for +1, 1 for −1), the matrix [σ, i, j] (n_o, n_o) has
    entries min over τ of lin_τ(k, m) + (σ τ sc[j, m] − tc[i, k])²: its minimum assignment (k -> m) is a
    lower bound on the block row's cost plus o's share. The matrices are built and bounded a few c units
    i at a time (``INNER_CHUNK``): wide blocks' tensors would otherwise leave the cache. Returns
    (G, 2, n_c, n_c)."""
    g, n_c, n_o = tc.shape
    step = max(1, INNER_CHUNK // (g * 2 * n_c * n_o * n_o))
    lp, lm, s = lin_plus[:, None, None], lin_minus[:, None, None], sc[:, None, :, None, :]
    parts = []
    for lo in range(0, n_c, step):
        t = tc[:, lo:lo + step, None, :, None]  # [g, i, ·, k, ·] against s [g, ·, j, ·, m]
        same, flip = (s - t) ** 2, (s + t) ** 2  # σ τ = +1, −1
        m = np.stack([np.minimum(lp + same, lm + flip), np.minimum(lp + flip, lm + same)], axis=1)
        parts.append(_assignment_min(m))
    return np.concatenate(parts, axis=2)


def _with_gilmore_lawler(plus, minus, blocks, cover, n_free):
    """Pair costs with the Gilmore–Lawler bounds of ``blocks`` added: each block lies between a layer c
    of ``cover`` and a layer o outside it, goes whole to c's pairs and absorbs o's own pair costs, shared
    equally among the free pairs of c (``n_free[c]``) and among o's cover neighbours. plus, minus: per
    hidden layer (..., n_h, n_h) (``None`` without free units); blocks: (l, teacher, student), each
    (..., free units of layer l, free units of layer l − 1); "..." is any batch shape shared by all.
    Returns (plus, minus, absorbed): absorbed[h] counts the cover neighbours sharing layer h's costs."""
    absorbed = [0] * len(plus)
    for l, _, _ in blocks:
        absorbed[l if l - 1 in cover else l - 1] += 1
    inner = []  # (cover layer, its block's teacher and student (..., c units, o units), o's shared costs)
    for l, tb, sb in blocks:
        c, o = (l, l - 1) if l in cover else (l - 1, l)
        tc, sc = (tb, sb) if c == l else (tb.swapaxes(-1, -2), sb.swapaxes(-1, -2))
        share = 1.0 / (absorbed[o] * n_free[c])
        inner.append((c, tc, sc, share * plus[o], share * minus[o]))
    plus, minus = list(plus), list(minus)
    for shape in sorted({tc.shape for _, tc, *_ in inner}):  # one batched solve per shape
        group = [item for item in inner if item[1].shape == shape]
        stacked = [np.stack([item[k] for item in group]) for k in range(1, 5)]
        bounds = _gilmore_lawler(*(x.reshape(-1, *x.shape[-2:]) for x in stacked))
        bounds = bounds.reshape(len(group), *shape[:-2], 2, shape[-2], shape[-2])
        for (c, *_), at in zip(group, bounds):
            plus[c], minus[c] = plus[c] + at[..., 0, :, :], minus[c] + at[..., 1, :, :]
    return plus, minus, absorbed


def _bound(prob: _Problem, lin: _Linear, src, sgn, cover=frozenset(), strong: bool = False) -> _Eval:
    """Bound a node from its exact part ``lin``. Free–free blocks: rearrangement, split between the rows'
    and the columns' pairs. With ``strong``, a block between a layer c of ``cover`` and a layer o outside
    it goes whole to c's pairs as a Gilmore–Lawler bound (``_with_gilmore_lawler``): o then needs no
    assignment of its own, and every entry is still counted once."""
    n_free = [inf[3].size for inf in lin.info]
    rearranged = [{} for _ in lin.info]
    gilmore = []
    for l, tb, sb in lin.blocks:
        if strong and (l in cover) != (l - 1 in cover):
            gilmore.append((l, tb, sb))
        else:
            rearranged[l][l - 1] = ROW_SHARE * _rearranged(tb, sb)
            rearranged[l - 1][l] = (1 - ROW_SHARE) * _rearranged(tb.T, sb.T)
    plus, minus, absorbed = _with_gilmore_lawler(lin.plus, lin.minus, gilmore, cover, n_free)
    raw = lin.const
    signs, penalties, duals, perms, unit_signs = [], [], [], [], []
    for h, (_, _, _, ft, fs) in enumerate(lin.info):
        perm, sign = src[h].copy(), sgn[h].copy()
        better = penalty = dual = None
        if ft.size:
            better = np.where(plus[h] <= minus[h], 1.0, -1.0)
            cost = np.minimum(plus[h], minus[h])
            if absorbed[h]:  # its costs are inside the cover layers' bounds: assigned only for the candidate
                cols, better = linear_sum_assignment(cost)[1], None
                sign[ft] = np.where(plus[h] <= minus[h], 1.0, -1.0)[np.arange(ft.size), cols]
            else:
                penalty = np.abs(plus[h] - minus[h])
                dual = _assignment(cost + sum(rearranged[h].values()))
                raw += dual.base + ft.size * dual.floor
                cols = dual.cols
                sign[ft] = better[np.arange(ft.size), cols]
            perm[ft] = fs[cols]
        signs.append(better), penalties.append(penalty), duals.append(dual)
        perms.append(perm), unit_signs.append(sign)
    key = max(0.0, raw * (1 - prob.kappa))
    free = tuple((inf[3], inf[4]) for inf in lin.info)
    return _Eval(free, tuple(signs), tuple(penalties), tuple(duals), tuple(rearranged), raw, key,
                 not lin.blocks, (tuple(perms), tuple(unit_signs)))


def _evaluate(prob: _Problem, src, sgn) -> _Eval:
    """The rearrangement bound of a node (see ``_linear`` for the arguments)."""
    return _bound(prob, _linear(prob, src, sgn), src, sgn)


def _child_keys(prob: _Problem, ev: _Eval, h: int) -> np.ndarray:
    """Certified bounds (n_h, n_h, 2) for the children "fix free target a of layer h to free source b with
    sign (+1, −1)[σ]", from the parent's reduced costs."""
    dual = ev.dual[h]
    base = ev.raw + dual.slack - dual.floor
    plus = base + np.where(ev.sign[h] > 0, 0.0, ev.penalty[h])
    minus = base + np.where(ev.sign[h] < 0, 0.0, ev.penalty[h])
    return np.maximum(np.stack([plus, minus], axis=-1) * (1 - prob.kappa), 0.0)


def _lookahead(lin: _Linear, ev: _Eval, h: int, options) -> np.ndarray:
    """How much fixing one pair of layer h raises the node's bound, for each of ``options`` (n_opt, 3):
    (free target index a, free source index b, sign index: 0 for +1, 1 for −1), beyond ``_child_keys``.

    Once a is fixed to b with sign σ, the weights between a and a free unit k of a neighbour layer are
    exact: for the neighbour's pair (k, m) at sign τ, e_τ = (σ τ s_m − t_k)², with t_k = T's weight
    between a and k and s_m = S's between b and m. Recharge the free–free block between the layers:

    - the pair (a, b) of layer h gives up its share of the block (its part of ``rearranged``);
    - the neighbour's pair (k, m) takes e_τ whole, plus its share of the rest of k's row of the block,
      which costs at least max(0, R(k, m) − (|t_k| − |s_m|)²): R, the rearrangement bound of the whole
      row, less the most the pair (a, b) can contribute to it.

    The neighbour's dual stays feasible: row (or column) minima of its reduced costs plus the rises
    bound every assignment. Returns (n_opt,) ≥ 0 (0 where the recharge does not pay)."""
    total = np.zeros(len(options))
    for nb in (h - 1, h + 1):
        if nb not in ev.rearranged[h] or ev.dual[nb] is None:
            continue
        l = max(h, nb)
        _, tb, sb = next(block for block in lin.blocks if block[0] == l)
        share = ROW_SHARE if nb == l else 1 - ROW_SHARE
        share_r, dual = ev.rearranged[nb][h], ev.dual[nb]
        parent = np.minimum(lin.plus[nb], lin.minus[nb]) + share_r
        n = parent.shape[0]
        step = max(1, LOOKAHEAD_CHUNK // (n * n))  # options per chunk: temporaries stay small
        for lo in range(0, len(options), step):
            a, b, sign = options[lo:lo + step].T
            if nb == l:  # the neighbour holds the block's rows, h its columns
                t_k, s_m = tb[:, a].T[:, :, None], sb[:, b].T[:, None, :]  # [option, k, m]
            else:
                t_k, s_m = tb[a, :][:, :, None], sb[b, :][:, None, :]
            same, flip = (s_m - t_k) ** 2, (s_m + t_k) ** 2  # σ τ = +1, −1
            rest = np.maximum(0.0, share_r - share * (np.abs(s_m) - np.abs(t_k)) ** 2)
            positive = (sign == 0)[:, None, None]
            child = rest + np.where(positive, np.minimum(lin.plus[nb] + same, lin.minus[nb] + flip),
                                    np.minimum(lin.plus[nb] + flip, lin.minus[nb] + same))
            # the rise, less the rounding of the two costs it compares
            reduced = dual.slack + np.maximum(0.0, child - parent - 4 * UNIT_ROUNDOFF * (child + parent))
            best = np.maximum(reduced.min(axis=2).sum(axis=1), reduced.min(axis=1).sum(axis=1))
            total[lo:lo + step] += best - n * dual.floor - ev.rearranged[h][nb][a, b]
    return np.maximum(total, 0.0)


def _rest(fixed, n: int) -> np.ndarray:
    """fixed (n_opt, q) distinct indices per row -> (n_opt, n − q): the other indices of 0..n−1, in order."""
    keep = np.ones((len(fixed), n), bool)
    keep[np.arange(len(fixed))[:, None], fixed] = False
    return np.nonzero(keep)[1].reshape(len(fixed), n - fixed.shape[1])


def _descendants(lin: _Linear, h: int, fixes):
    """The exact parts of the nodes below a node that fix q more pairs of layer h, batched: ``fixes``
    (n_opt, q, 3) rows (free target index a, free source index b, sign index s: 0 for +1, 1 for −1), the
    a distinct and the b distinct within each option. Returns (const (n_opt,), plus, minus (per layer
    (n_opt, n, n) or ``None``), blocks (l, teacher, student) each (n_opt, rows, columns)), as ``_linear``
    gives them for one node. The fixed pairs' own costs join the constant, and the weights between a
    fixed a and the free units k of a neighbour layer, now exact, join the neighbour's pairs (k, m) at
    sign τ: (σ τ s_bm − t_ak)²."""
    a, b, s = fixes[..., 0], fixes[..., 1], fixes[..., 2]  # (n_opt, q) each
    n_opt, n = len(fixes), lin.info[h][3].size
    const = lin.const + np.where(s == 0, lin.plus[h][a, b], lin.minus[h][a, b]).sum(axis=1)
    plus = [None if p is None else np.broadcast_to(p, (n_opt, *p.shape)) for p in lin.plus]
    minus = [None if m is None else np.broadcast_to(m, (n_opt, *m.shape)) for m in lin.minus]
    rest_a, rest_b = _rest(a, n), _rest(b, n)  # (n_opt, n − q)
    plus[h] = lin.plus[h][rest_a[:, :, None], rest_b[:, None, :]]
    minus[h] = lin.minus[h][rest_a[:, :, None], rest_b[:, None, :]]
    sigma = (1.0 - 2.0 * s)[:, :, None, None]
    blocks = []
    for l, tb, sb in lin.blocks:
        if h not in (l, l - 1):
            blocks.append((l, np.broadcast_to(tb, (n_opt, *tb.shape)), np.broadcast_to(sb, (n_opt, *sb.shape))))
            continue
        o = l - 1 if h == l else l
        th, sh = (tb, sb) if h == l else (tb.T, sb.T)  # (h units, o units)
        t_k, s_m = th[a][:, :, :, None], sigma * sh[b][:, :, None, :]  # [option, fix, k, m]
        plus[o] = plus[o] + ((s_m - t_k) ** 2).sum(axis=1)
        minus[o] = minus[o] + ((s_m + t_k) ** 2).sum(axis=1)
        if rest_a.shape[1]:  # else no free unit of h is left: the block is no longer free–free
            th, sh = th[rest_a], sh[rest_b]
            blocks.append((l, *((th, sh) if h == l else (th.swapaxes(1, 2), sh.swapaxes(1, 2)))))
    return const, plus, minus, blocks


def _screen(prob: _Problem, lin: _Linear, cover, h: int, fixes):
    """Certified bounds (n_opt,) of the nodes below a node given by ``fixes`` (as in ``_descendants``), all
    at once: the Gilmore–Lawler bound on ``cover`` with every layer's assignment solved by
    ``_assignment_min`` (exactly for small layers: only sums of non-negative terms, within κ). ``None``
    where some free–free block does not lie between a layer of ``cover`` and one outside it."""
    if any((l in cover) == (l - 1 in cover) for l, _, _ in lin.blocks):
        return None
    if not len(fixes):
        return np.zeros(0)
    const, plus, minus, blocks = _descendants(lin, h, fixes)
    n_free = [inf[3].size for inf in lin.info]
    n_free[h] -= fixes.shape[1]
    plus, minus, absorbed = _with_gilmore_lawler(plus, minus, blocks, cover, n_free)
    raw = const
    for k in range(len(n_free)):
        if n_free[k] and not absorbed[k]:
            raw = raw + _assignment_min(np.minimum(plus[k], minus[k]))
    return np.maximum(raw * (1 - prob.kappa), 0.0)


def _screen_children(prob: _Problem, lin: _Linear, cover, h: int, options, keys):
    """Certified bounds (n_opt,) of a node's children ``options`` (n_opt, 3) (as in ``_lookahead``), each
    the least ``_screen`` bound of its own children on one more target unit r of layer h: the one with
    the fewest surviving options in ``keys`` (n_h, n_h, 2) (the children's bounds, +inf where pruned;
    grandchildren on those options are pruned too). Where that batch would exceed ``SCREEN_MAX_SIZE``
    (or no unit is left for r), the children's own ``_screen`` bounds; ``None`` where these would too,
    where a free–free block is wider than ``SCREEN_MAX_WIDTH``, or where ``_screen`` does not apply."""
    if max((max(tb.shape) for _, tb, _ in lin.blocks), default=0) > SCREEN_MAX_WIDTH:
        return None
    n, size = keys.shape[0], _gilmore_size(lin)
    if n > 1:
        a, b, _ = options.T
        alive = np.isfinite(keys)
        count = np.tile(alive.sum(axis=(1, 2)), (len(options), 1))
        count[np.arange(len(options)), a] = 2 * n + 1  # not the child's own target
        r = count.argmin(axis=1)
        grand = alive[r]  # (n_opt, n, 2): the options of r ...
        grand[np.arange(len(options)), b] = False  # ... but the child's own source
        i, b2, s2 = np.nonzero(grand)
        if i.size * size <= SCREEN_MAX_SIZE:
            screened = _screen(prob, lin, cover, h, np.stack([options[i], np.column_stack([r[i], b2, s2])], axis=1))
            if screened is None:
                return None
            least = np.full(len(options), np.inf)
            np.minimum.at(least, i, screened)
            return least
    if len(options) * size <= SCREEN_MAX_SIZE:
        return _screen(prob, lin, cover, h, options[:, None, :])
    return None


# ----------------------------------------------------------------------------------------------------------
# the search


def _cover(widths) -> frozenset:
    """Hidden layers to branch on: a minimum-weight vertex cover of the chain 0–1–…–(H−1), weight of a
    layer log(d! 2^d) (its group factor's size), so that fixing them leaves no free–free coupling."""
    if not widths:
        return frozenset()
    weight = [math.lgamma(d + 1) + d * math.log(2) for d in widths]
    # best[k][taken]: (cost, cover) of layers 0..k with layer k taken or not, every edge up to k covered
    best = [(0.0, ()), (weight[0], (0,))]
    for k in range(1, len(widths)):
        skip = best[1]  # edge (k-1, k) needs k-1 when k is skipped
        take = min(best, key=lambda c: c[0])
        best = [skip, (take[0] + weight[k], take[1] + (k,))]
    return frozenset(min(best, key=lambda c: c[0])[1])


def _alternative(widths, cover: frozenset):
    """The other layers, when they are a vertex cover as well (no two adjacent layers both outside
    ``cover``, e.g. with two or three hidden layers), else ``None`` (also with one hidden layer: nothing to
    branch on)."""
    rest = frozenset(range(len(widths))) - cover
    if not cover or any(h not in rest and h + 1 not in rest for h in range(len(widths) - 1)):
        return None
    return rest


def _fixed(src, sgn, h, targets, sources, signs):
    """A copy of the node with layer h's ``targets`` fixed to ``sources`` with ``signs``."""
    src, sgn = list(src), list(sgn)
    src[h], sgn[h] = src[h].copy(), sgn[h].copy()
    src[h][targets], sgn[h][targets] = sources, signs
    return tuple(src), tuple(sgn)


def _reduce(prob: _Problem, ev: _Eval, src, sgn, bound: float):
    """Reduced-cost fixing. Per layer with a dual, the children's certified bounds (``_child_keys``) with
    those reaching ``bound`` set to +inf. Returns ``None`` when some unit has no surviving option (no
    completion beats ``bound``), else (the node with every unit that has a single surviving option fixed,
    or ``None`` when there is none; the per-layer bounds, ``None`` for layers without a dual)."""
    keys_all, changed = [None] * len(src), False
    for h, (ft, fs) in enumerate(ev.free):
        if ev.dual[h] is None:
            continue
        keys = _child_keys(prob, ev, h)
        alive = keys < bound
        keys[~alive] = np.inf
        keys_all[h] = keys
        options = np.add(alive[..., 0], alive[..., 1], dtype=int)
        per_row, per_col = options.sum(axis=1), options.sum(axis=0)
        if not per_row.all() or not per_col.all():
            return None
        # a row's or column's single surviving option: the first True of its (options, sign) block
        rows, cols = np.flatnonzero(per_row == 1), np.flatnonzero(per_col == 1)
        if rows.size or cols.size:
            n = ft.size
            row_b, row_s = np.divmod(alive[rows].reshape(rows.size, 2 * n).argmax(axis=1), 2)
            col_a, col_s = np.divmod(alive[:, cols].transpose(1, 0, 2).reshape(cols.size, 2 * n).argmax(axis=1), 2)
            # each fix once (a forced row and its forced column name the same one); two fixes that share a
            # target or a source contradict each other
            fixes = np.unique(np.concatenate([(rows * n + row_b) * 2 + row_s, (col_a * n + cols) * 2 + col_s]))
            a, b, s = fixes // (2 * n), fixes // 2 % n, fixes % 2
            if (np.diff(a) == 0).any() or np.bincount(b).max() > 1:  # a is sorted with the fixes
                return None
            src, sgn = _fixed(src, sgn, h, ft[a], fs[b], 1.0 - 2.0 * s)
            changed = True
    return ((src, sgn) if changed else None), keys_all


def _branch_unit(ev: _Eval, keys, cover):
    """The unit to branch on, within the cover layers that still couple to a free neighbour: a teacher
    unit (row) or a student unit (column) with the fewest surviving options, ties broken by the largest
    regret (second-best child bound minus the best), so that its best option is the most decided.
    Returns (h, "row" | "col", index)."""
    n_hidden = len(ev.free)
    best = None
    for h in sorted(cover):
        if keys[h] is None or not any(0 <= k < n_hidden and ev.free[k][0].size for k in (h - 1, h + 1)):
            continue
        for side, per_unit in (("row", keys[h]), ("col", keys[h].transpose(1, 0, 2))):
            flat = np.sort(per_unit.reshape(per_unit.shape[0], -1), axis=1)
            counts = np.isfinite(flat).sum(axis=1)
            regret = flat[:, 1] - flat[:, 0]  # every count is ≥ 2 here: single options were fixed
            k = int(np.lexsort((-regret, counts))[0])
            score = (counts[k], -regret[k])
            if best is None or score < best[0]:
                best = (score, h, side, k)
    return best[1:]


class _Search:
    """Incumbent and bookkeeping of one ``certified_align`` call."""

    def __init__(self, prob: _Problem, budget: Budget, start: float):
        self.prob, self.budget, self.start = prob, budget, start
        widths = prob.dims[1:-1]
        self.cover = _cover(widths)  # the layers branched on (see ``_strong``)
        self.alternative = _alternative(widths, self.cover)
        self.t_flat = _teacher_flat(prob)
        self.best, self.best_sq, self.upper = None, math.inf, math.inf
        self.nodes = 0

    def out_of_time(self) -> bool:
        return self.budget.seconds is not None and time.perf_counter() - self.start >= self.budget.seconds

    def out_of_budget(self) -> bool:
        return (self.budget.nodes is not None and self.nodes > self.budget.nodes) or self.out_of_time()

    def futile(self, heap: list) -> bool:
        """Whether the nodes the budget has left cannot raise the lower bound by more than ``FUTILE_SHARE``
        of the gap between it and the incumbent. Each evaluation removes one open node and adds children
        whose bounds are no lower than its own, so after k more the least open bound is at most the
        (k+1)-th least of ``heap`` now. Never with an unlimited node budget."""
        if self.budget.nodes is None:
            return False
        left = self.budget.nodes + 1 - self.nodes
        if len(heap) <= left:
            return False
        reach = heapq.nsmallest(left + 1, heap)[-1][0]
        return reach - heap[0][0] < FUTILE_SHARE * (self.best_sq - heap[0][0])

    def offer(self, g) -> float:
        """Take g = (perms, signs) as the incumbent if it is strictly closer. Returns ‖g·θ_s − θ_t‖²."""
        diff = _apply_flat(self.prob, *g) - self.t_flat
        sq = float(diff @ diff)
        if sq < self.best_sq or self.best is None:  # the first is taken even where its distance overflows
            self.best, self.best_sq, self.upper = g, sq, float(np.linalg.norm(diff))
        return sq

    def improve(self, g):
        """Offer g; polish it when it is a new incumbent."""
        before = self.best_sq
        if self.offer(g) < before:
            self.polish(g)

    def polish(self, g):
        """Coordinate descent from g: each hidden layer in turn re-assigned exactly with the others fixed,
        until no layer improves; every improvement is offered."""
        n_hidden = len(self.prob.dims) - 2
        current = self.offer(g)
        for _ in range(POLISH_SWEEPS):
            improved = False
            for h in range(n_hidden):
                src, sgn = _fixed(g[0], g[1], h, slice(None), -1, 0.0)
                candidate = _evaluate(self.prob, src, sgn).candidate
                if (sq := self.offer(candidate)) < current:
                    g, current, improved = candidate, sq, True
            if not improved or n_hidden == 1 or self.out_of_time():
                return

    def dive(self, root_src, root_sgn, order):
        """Fix whole layers in ``order`` to the relaxation's assignment, one after the other."""
        src, sgn = root_src, root_sgn
        for h in order:
            perms, signs = _evaluate(self.prob, src, sgn).candidate
            src, sgn = _fixed(src, sgn, h, slice(None), perms[h], signs[h])
        return src, sgn


def _gilmore_size(lin: _Linear) -> int:
    """The size of a node's Gilmore–Lawler tensors: Σ over its free–free blocks of (block size)²."""
    return sum(tb.size ** 2 for _, tb, _ in lin.blocks)


def _bounds(prob: _Problem, search: _Search, lin: _Linear, src, sgn):
    """The bounds of a node, cheapest first, each computed only when the ones before it decided nothing.
    Small nodes get the Gilmore–Lawler bound at once. For large ones it is costly, so the rearrangement
    bound comes first, and the Gilmore–Lawler one after it (never beyond ``STRONG_MAX_SIZE``).

    The Gilmore–Lawler bound is on the search's branching layers (``search.cover``). The first node that
    needs more than that (one that would be branched on) also gets it on the alternative cover, if any,
    once per search: which layer of a block absorbs the other's pair costs changes the bound much (with
    [2, w, w, 1] the second layer is the better one). When the alternative is better, its layers are
    branched on from then on."""
    size = _gilmore_size(lin)
    if size > STRONG_FIRST_SIZE:
        yield _bound(prob, lin, src, sgn)
    if size > STRONG_MAX_SIZE:
        return
    strong = _bound(prob, lin, src, sgn, search.cover, strong=True)
    yield strong
    if search.alternative is not None:
        cover, search.alternative = search.alternative, None
        other = _bound(prob, lin, src, sgn, cover, strong=True)
        if other.key > strong.key:
            search.cover = cover
            yield other


def _examine(prob: _Problem, search: _Search, src, sgn, key: float):
    """Evaluate one node whose certified bound is at least ``key``. Returns ``None`` (pruned: no completion
    beats the incumbent), ``("closed", key, None)`` (exact: its optimum was offered), ``("shrunk", key,
    node)`` (reduced-cost fixing fixed some units) or ``("branch", key, [(child key, child), ...])``.

    The node's bounds (``_bounds``) are taken in turn until one prunes, closes or shrinks it; it is branched
    on with the highest of them (the earliest among equals: the rearrangement bound has a look-ahead)."""
    lin = _linear(prob, src, sgn)
    branch_on = None  # (bound, the children's bounds from its reduced costs)
    for ev in _bounds(prob, search, lin, src, sgn):
        key = max(key, ev.key)
        if key >= search.best_sq:
            return None
        search.improve(ev.candidate)
        if ev.exact:
            return "closed", key, None
        if branch_on is not None and ev.key <= branch_on[0].key:
            continue
        reduced = _reduce(prob, ev, src, sgn, search.best_sq)
        if reduced is None:
            return None
        if reduced[0] is not None:
            return "shrunk", key, reduced[0]
        branch_on = ev, reduced[1]
    ev, keys = branch_on
    h, side, k = _branch_unit(ev, keys, search.cover)
    ft, fs = ev.free[h]
    options = np.argwhere(np.isfinite(keys[h][k] if side == "row" else keys[h][:, k]))
    options = np.column_stack([np.full(len(options), k), options] if side == "row" else
                              [options[:, 0], np.full(len(options), k), options[:, 1]])
    child_keys = keys[h][options[:, 0], options[:, 1], options[:, 2]]
    child_keys = child_keys + _lookahead(lin, ev, h, options) * (1 - prob.kappa)
    if _gilmore_size(lin) <= STRONG_FIRST_SIZE:  # small nodes: bound the children by their own children
        screened = _screen_children(prob, lin, search.cover, h, options, keys[h])
        if screened is not None:
            child_keys = np.maximum(child_keys, screened)
    children = []
    for (a, b, s), child_key in zip(options, child_keys):
        if child_key < search.best_sq:
            child = _fixed(src, sgn, h, [ft[a]], [fs[b]], [1.0 if s == 0 else -1.0])
            children.append((max(key, float(child_key)), child))
    return "branch", key, children


def _empty_node(widths):
    return tuple(np.full(d, -1) for d in widths), tuple(np.zeros(d) for d in widths)


def _identity(widths):
    return tuple(np.arange(d) for d in widths), tuple(np.ones(d) for d in widths)


def _heuristic(prob: _Problem):
    """``symmetry.align``'s group element as (perms, signs)."""
    from l2rebound.symmetry import align  # imports JAX; deferred so that importing this module is cheap

    theta = [np.concatenate([p for w, b in zip(ws, bs) for p in (w.reshape(-1), b)])
             for ws, bs in ((prob.s_w, prob.s_b), (prob.t_w, prob.t_b))]
    g, _ = align(theta[0], theta[1], prob.dims)
    return tuple(np.asarray(p, int) for p in g.perms), tuple(np.asarray(x, float) for x in g.signs)


def _run(prob: _Problem, budget: Budget, start: float):
    """Branch and bound. Returns (incumbent (perms, signs), upper, lower², finished, nodes).

    The search starts from the cheap incumbents (the identity, then the root relaxation's assignment as the
    root is examined); a student near its teacher is then proven optimal in a few nodes. Only when the budget
    ends first are the costlier starts tried (``symmetry.align``'s heuristic and two dives, each polished), for
    a better upper bound, which may also close the search."""
    widths = prob.dims[1:-1]
    search = _Search(prob, budget, start)
    root = _empty_node(widths)
    search.offer(_identity(widths))
    if not widths:
        return search.best, search.upper, search.best_sq, True, 0
    heap = [(0.0, 0, root)]  # examining the root offers its relaxation's assignment
    counter = itertools.count(1)
    closed = _branch(prob, search, heap, counter)
    if heap and heap[0][0] < search.best_sq:
        starts = [_identity(widths), _evaluate(prob, *root).candidate, _heuristic(prob),
                  search.dive(*root, range(len(widths))), search.dive(*root, reversed(range(len(widths))))]
        seen = set()
        for g in starts:
            name = b"".join(x.tobytes() for x in (*g[0], *g[1]))
            if name not in seen:  # polishing is deterministic: a repeated start ends where its first copy did
                seen.add(name)
                search.polish(g)  # stops early when the time is up, but every start is offered
    finished = not heap or heap[0][0] >= search.best_sq
    lower_sq = min(search.best_sq, closed, heap[0][0] if not finished else math.inf)
    return search.best, search.upper, lower_sq, finished, search.nodes


def _branch(prob: _Problem, search: _Search, heap: list, counter) -> float:
    """Best-first branch and bound over the open nodes ``heap`` (key, tie-break, node) until it is empty,
    its least key reaches the incumbent, or the budget ends (the node in hand goes back on the heap).
    Returns the least bound of the exact leaves it closed (each attained by a candidate it offered)."""
    closed = math.inf
    while heap and heap[0][0] < search.best_sq and not search.out_of_budget() and not search.futile(heap):
        key, _, (src, sgn) = heapq.heappop(heap)
        while True:  # evaluate; repeat while reduced-cost fixing shrinks the node
            search.nodes += 1
            outcome = _examine(prob, search, src, sgn, key)
            if outcome is None:
                break
            kind, key, payload = outcome
            if kind == "closed":
                closed = min(closed, key)
                break
            if kind == "branch":
                for child_key, child in payload:
                    heapq.heappush(heap, (child_key, next(counter), child))
                break
            src, sgn = payload
            if search.out_of_budget():
                heapq.heappush(heap, (key, next(counter), (src, sgn)))
                break
    return closed


# ----------------------------------------------------------------------------------------------------------
# entry points


EXACT_WIDTH = 6
EXACT_LAYERS = 3
"""A network with at most ``EXACT_LAYERS`` hidden layers of at most ``EXACT_WIDTH`` units each is searched to the
end whatever the node budget (``node_budget``): its group is small enough for the search to finish in a
fraction of a second, so its stored distances are exact."""


def node_budget(dims: tuple[int, ...], nodes: int | None) -> int | None:
    """The nodes beyond the root that a stored result's alignment searches, for a config's ``align_budget``
    ``nodes``: None (to the end) for a network within ``EXACT_WIDTH`` and ``EXACT_LAYERS``, else ``nodes``. A
    function of the config alone: the same students give the same numbers."""
    hidden = dims[1:-1]
    return None if len(hidden) <= EXACT_LAYERS and max(hidden) <= EXACT_WIDTH else nodes


def certified_align(theta_s, theta_t, dims: tuple[int, ...], budget: Budget | None = None) -> Alignment:
    """Certified min_g ‖g·θ_s − θ_t‖₂ over the symmetry group. θ_s, θ_t: (P,) (NumPy or JAX; computed in
    float64). ``budget``: a ``Budget`` (``None``: search to the end, which is fast for hidden widths up to
    about 6 and can take arbitrarily long for wide layers far from each other).

    Returns an ``Alignment``: ``symmetry`` (a ``symmetry.Symmetry`` g, applied to the student), ``upper``
    = ‖apply(g, θ_s) − θ_t‖₂, ``lower`` ≤ the true minimum (certified, see the module's floating-point
    note), ``optimal`` (the search finished: ``upper`` is the minimum and ``lower`` equals it up to that
    margin, about 1e-13 relative), ``nodes``, ``seconds``. When the budget runs out, ``lower`` is the
    least bound over the unexplored nodes, and ``optimal`` is False.

    Exactly optimal runs are invariant: relabelling or sign-flipping either network's units, or swapping
    the two networks, changes neither number beyond rounding. Budget-limited runs give valid bounds that
    depend on the units' labels (the search order and the identity start do); with a node budget they
    are deterministic."""
    start = time.perf_counter()
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget or None, not {type(budget).__name__}")
    prob = _problem(theta_s, theta_t, dims)
    (perms, signs), upper, lower_sq, finished, nodes = _run(prob, budget or Budget(), start)
    lower = min(upper, math.sqrt(max(0.0, lower_sq)) * (1 - 2 * UNIT_ROUNDOFF))
    from l2rebound.symmetry import Symmetry  # imports JAX; deferred so that importing this module is cheap

    g = Symmetry(tuple(np.asarray(p) for p in perms), tuple(np.asarray(s, float) for s in signs))
    return Alignment(g, upper, lower, finished, nodes, time.perf_counter() - start)


def l2_aligned_lower(theta_s, theta_t, dims: tuple[int, ...], budget: Budget | None = None) -> float:
    """A certified lower bound on min_g ‖g·θ_s − θ_t‖₂ (``certified_align(...).lower``)."""
    return certified_align(theta_s, theta_t, dims, budget).lower


def certified_bounds(thetas_s, thetas_t, dims: tuple[int, ...], budget: Budget | None = None):
    """``certified_align`` over a batch: thetas_s (N, P) or (P,), thetas_t likewise (broadcast against
    each other). The budget applies to each pair. Returns (lower (N,), upper (N,), optimal (N,) bool)."""
    s, t = np.broadcast_arrays(np.atleast_2d(np.asarray(thetas_s, float)), np.atleast_2d(np.asarray(thetas_t, float)))
    out = [certified_align(a, b, dims, budget) for a, b in zip(s, t)]
    return (np.array([r.lower for r in out]), np.array([r.upper for r in out]),
            np.array([r.optimal for r in out], dtype=bool))
