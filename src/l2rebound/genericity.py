"""The generic class ℱ (Fefferman–Markel conditions) and the jitter projection onto it.

Per layer l of a network θ:
  C1  every weight and every bias is non-zero;
  C2  the biases of the layer have pairwise distinct absolute values;
  C3  for every input unit k, no ratio ``w_jk / w_j'k`` (j ≠ j') equals ±p/q with p, q ≤ ``RATIO_BOUND``.
Equalities are tested up to ``TOLERANCE_ULPS`` relative units of the dtype's epsilon, so a violation is a
floating-point coincidence, not a near miss. The jitter moves only the entries that violate a condition: a
zero becomes ±``ZERO_JITTER``·(1 + u), u ~ U(0, 1) (the original's teachers have zero biases, which end near
±1e-6); any other flagged entry is moved away from zero by ``MOVE_ULPS`` relative units. The checks and
projections are pure and jit-able; ``genericity_report`` and ``format_report`` (how far a network is from
leaving ℱ) run on the host in NumPy; ``project_margin`` is the Euclidean projection onto the set with a
margin ε.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from l2rebound import kernel
from l2rebound.nets import layer_slices

RATIO_BOUND = 10
TOLERANCE_ULPS = 4
MOVE_ULPS = 16
ZERO_JITTER = 1e-6
MAX_ROUNDS = 8
PAIRS_UP_TO = 64
"""Layers of at most this many rows decide C3 by comparing every pair of rows (no sorting)."""
WINDOW_CAP = 32
"""A column where more than this many keys lie in one key's window (many weights of about one size) is decided
by comparing every pair of rows."""
KEYS_PER_BLOCK = 2**21
"""Keys sorted at once by the sorted C3 check: columns are taken in blocks of about this many keys, which bounds
its memory."""


def _tolerance(dtype) -> float:
    """Relative tolerance of every equality test: ``TOLERANCE_ULPS`` units of the dtype's epsilon."""
    return TOLERANCE_ULPS * float(jnp.finfo(dtype).eps)


def _equal_abs_later(values, rtol):
    """Mask (d,): entry i is flagged when |values_i| equals |values_j| for some j < i (C2)."""
    a = jnp.abs(values)
    same = jnp.abs(a[:, None] - a[None, :]) <= rtol * jnp.maximum(a[:, None], a[None, :])
    earlier = jnp.tril(jnp.ones(same.shape, bool), k=-1)
    return jnp.any(same & earlier & (a[:, None] > 0), axis=1)


def _ratio_hit(a_j, inverse_i, q, rtol):
    """C3's test of one pair of weights for one q, elementwise over broadcast operands: |w_j|·(1/|w_i|)·q lies
    within rtol (relative) of an integer p, 1 ≤ p ≤ RATIO_BOUND. Written with the reciprocal 1/|w_i|, as XLA
    compiles a division by a broadcast operand anyway, so that the pairwise and the sorted checks round alike."""
    t = a_j * inverse_i * q
    p = jnp.round(t)
    return (p >= 1) & (p <= RATIO_BOUND) & (jnp.abs(t - p) <= rtol * t)


def _rational_ratio_later(w, rtol):
    """Mask (d_out, d_in): ``w[j, k]`` is flagged when |w_jk / w_ik| = p/q (p, q ≤ RATIO_BOUND) for some
    row i < j (C3), by comparing every pair of rows: O(d_out² d_in). Zeros (and NaN) are left to C1."""
    a = jnp.abs(w)
    inverse = 1 / jnp.where(a > 0, a, 1.0)
    q = jnp.arange(1, RATIO_BOUND + 1, dtype=w.dtype)
    hit = jnp.any(_ratio_hit(a[None, :, :, None], inverse[:, None, :, None], q, rtol), axis=-1)  # [i, j, k]
    earlier = jnp.tril(jnp.ones((a.shape[0], a.shape[0]), bool), k=-1).T  # [i, j]: i < j
    valid = (a[:, None, :] > 0) & (a[None, :, :] > 0) & earlier[:, :, None]
    return jnp.any(hit & valid, axis=0)


def _key_range(dtype, slack):
    """The |w| (lo, hi) whose keys m·|w| the sorted C3 check compares: there the reciprocal, the products of
    ``_ratio_hit`` that can pass, every key and slack·key are normal numbers, so each is rounded once, to within
    eps/2 relative (below lo slack·key may underflow; above hi 1/|w| may, and 10·|w| overflow)."""
    info = jnp.finfo(dtype)
    return 2 * float(info.tiny) / slack, float(info.max) / 16


def _sorted_keys(cols, lo, hi):
    """Each column's keys m·|w_x| (m = 1..RATIO_BOUND), sorted, for cols (c, d_out) = |w| transposed: keys (c, n),
    their rows x (c, n) int32 and m (c, n) in cols' dtype, n = RATIO_BOUND·d_out, and spread, a float: the sorted
    keys are each key K truncated to T, T ≤ K < T·(1 + spread). An |w| outside [lo, hi] (zeros, NaN, infinities
    among them) has the key +inf: sorted last."""
    c, d_out = cols.shape
    n = d_out * RATIO_BOUND
    m = jnp.arange(1, RATIO_BOUND + 1, dtype=cols.dtype)
    regular = (cols >= lo) & (cols <= hi)
    keys = jnp.where(regular[:, :, None], cols[:, :, None] * m, jnp.inf).reshape(c, n)
    ids = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), keys.shape)  # x·RATIO_BOUND + m − 1
    if jax.dtypes.canonicalize_dtype(np.int64) == np.int64:
        # one sort of integers, far faster than of keys and ids together: a positive float64's bits order as its
        # value; its lowest `bits` bits of 52 replaced by the id (K truncated to T, T ≤ K < T·(1 + spread)) make
        # every value distinct and carry the id along
        bits = (n - 1).bit_length()
        low = (1 << bits) - 1
        packed = jax.lax.bitcast_convert_type(keys.astype(jnp.float64), jnp.int64) & ~low | ids
        packed = jax.lax.sort(packed, dimension=1, is_stable=False)
        keys, ids = jax.lax.bitcast_convert_type(packed & ~low, jnp.float64), (packed & low).astype(jnp.int32)
        spread = 2.0 ** (bits - 52)
    else:  # without 64-bit types (then cols are at most 32-bit floats)
        keys, ids = jax.lax.sort((keys, ids), dimension=1, num_keys=1)
        spread = 0.0
    return keys, ids // RATIO_BOUND, (ids % RATIO_BOUND + 1).astype(cols.dtype), spread


def _ratio_later_sorted(cols, rtol):
    """C3 for a block of columns cols (c, d_out) = |w| transposed, deciding as ``_rational_ratio_later`` in
    O(n log n) per column (n = RATIO_BOUND·d_out): returns hits (c, d_out), row x of column k flagged, and redo
    (c,), the columns it could not decide (hits there are incomplete).

    Each column's keys m·|w_x| are sorted; for d = 1, 2, ... (while some pair lies in its window, at most
    ``WINDOW_CAP``) every pair of keys d places apart whose larger sorted key lies within the window
    fl(x + fl(slack·x)) of the smaller x is tested with ``_ratio_hit`` and the m of the later row's key, and the
    later row is flagged on a hit. That covers every pair the pairwise test accepts. If it accepts |w_j|,
    1/|w_i|, q with p = round(t), both |w| in ``_key_range`` (every rounding within u = eps/2 relative):
    t = (q|w_j|/|w_i|)(1 + e), |e| ≤ 3u to first order; t − p is exact (Sterbenz) and at most rtol·t(1 + u); so
    the keys q|w_j| and p|w_i|, rounded once more each, differ by at most (rtol + 5u) of the larger: larger ≤
    smaller·(1 + rtol + 3 eps) to first order, and for their truncations T as sorted, larger T ≤ smaller
    T·(1 + rtol + 3 eps)(1 + spread), below fl(T + fl(slack·T)) ≥ T(1 + slack − 2 eps) with slack = 2 rtol +
    8 eps + 2 spread. Outside the range: zeros and NaN fail the pairwise test's |w| > 0 (so do subnormals where
    the CPU reads them as zero), an infinite |w| never passes (t is 0, inf or NaN), and any other |w| puts its
    column in redo; so does a key with more than ``WINDOW_CAP`` keys in its window."""
    c, d_out = cols.shape
    eps = float(jnp.finfo(cols.dtype).eps)
    lo, hi = _key_range(cols.dtype, 2 * rtol + 8 * eps)
    keys, rows, m, spread = _sorted_keys(cols, lo, hi)
    upper = keys + (2 * rtol + 8 * eps + 2 * spread) * keys
    sizes = jnp.take_along_axis(cols, rows, axis=1)
    inverses = 1 / sizes
    column = jnp.arange(c)[:, None]

    def step_on(on):  # each key's partner one place further on (past the end: a key +inf, never in a window)
        return tuple(jnp.concatenate([x[:, 1:], jnp.full((c, 1), fill, x.dtype)], axis=1)
                     for x, fill in zip(on, (jnp.inf, 0, 1, 1, 1)))

    def in_window(on):  # (c, n): the partner's key lies in the key's window
        return (on[0] <= upper) & (on[0] < jnp.inf)

    def body(state):
        d, on, _, marks = state
        _, rows_on, m_on, sizes_on, inverses_on = on
        later = rows > rows_on  # the key's own row is the later one
        hit = in_window(on) & (rows != rows_on) & _ratio_hit(
            jnp.where(later, sizes, sizes_on), jnp.where(later, inverses_on, inverses), jnp.where(later, m, m_on), rtol)
        marks = marks.at[column, jnp.where(later, rows, rows_on)].max(hit)
        on = step_on(on)
        return d + 1, on, jnp.any(in_window(on), axis=1), marks

    def cond(state):
        d, _, more, _ = state
        return (d <= WINDOW_CAP) & jnp.any(more)

    on = step_on((keys, rows, m, sizes, inverses))
    d, _, more, marks = jax.lax.while_loop(
        cond, body, (1, on, jnp.any(in_window(on), axis=1), jnp.zeros((c, d_out), bool)))
    irregular = (cols > 0) & (cols < jnp.inf) & ~((cols >= lo) & (cols <= hi))
    return marks, (more & (d > WINDOW_CAP)) | jnp.any(irregular, axis=1)


def _redo_by_pairs(cols, hits, redo, rtol):
    """hits (c, d_out) with each column k where redo (c,) decided instead by every pair of rows of cols (c, d_out)
    = |w| transposed. A loop over those columns only, one at a time: memory O(d_out²), and no column is
    recomputed needlessly, under ``vmap`` too (where a conditional would run both its branches)."""
    order = jnp.argsort(~redo, stable=True)  # the columns to redo first

    def body(state):
        i, hits = state
        k = order[i]
        return i + 1, hits.at[k].set(_rational_ratio_later(cols[k][:, None], rtol)[:, 0])

    return jax.lax.while_loop(lambda state: state[0] < jnp.sum(redo), body, (0, hits))[1]


def _ratio_later(w, rtol):
    """C3's mask (d_out, d_in) for w (d_out, d_in): every pair of rows for at most ``PAIRS_UP_TO`` rows, else
    sorted keys, the columns in blocks of about ``KEYS_PER_BLOCK`` keys, so that time is O(P log P) and memory
    O(P) for P = d_out·d_in (but for columns the sorted check leaves to every pair). Decides as
    ``_rational_ratio_later`` either way."""
    d_out, d_in = w.shape
    if d_out <= PAIRS_UP_TO:
        return _rational_ratio_later(w, rtol)
    c = min(d_in, max(1, KEYS_PER_BLOCK // (RATIO_BOUND * d_out)))
    blocks = -(-d_in // c)
    cols = jnp.pad(jnp.abs(w).T, ((0, blocks * c - d_in), (0, 0))).reshape(blocks, c, d_out)  # zeros: unflagged

    def block(cols):
        return _redo_by_pairs(cols, *_ratio_later_sorted(cols, rtol), rtol)

    return jax.lax.map(block, cols).reshape(blocks * c, d_out)[:d_in].T


@partial(jax.jit, static_argnames="dims")
def violations(theta, dims: tuple[int, ...]):
    """Boolean mask (P,) of the entries of θ that violate C1, C2 or C3 (for C2/C3 the later member of a
    coinciding pair is flagged, so moving flagged entries resolves the coincidence)."""
    rtol = _tolerance(theta.dtype)
    mask = jnp.asarray(theta) == 0
    for (ws, bs), d_in, d_out in zip(layer_slices(dims), dims[:-1], dims[1:]):
        w = theta[ws].reshape(d_out, d_in)
        mask = mask.at[bs].max(_equal_abs_later(theta[bs], rtol))
        mask = mask.at[ws].max(_ratio_later(w, rtol).reshape(-1))
    return mask


def _flagged(theta, dims: tuple[int, ...]):
    """``violations``, by the fused kernel where it serves (float64 or float32 on a CPU, ``kernel.enabled``)."""
    if kernel.enabled(theta.dtype):
        return kernel.violations(theta, dims, _tolerance(theta.dtype), RATIO_BOUND)
    return violations(theta, dims)


@partial(jax.jit, static_argnames="dims")
def is_generic(theta, dims: tuple[int, ...]) -> jax.Array:
    """True when θ satisfies C1–C3 (scalar bool)."""
    return ~jnp.any(violations(theta, dims))


def _move(theta, flagged, key):
    """θ (P,) with every entry of the mask ``flagged`` (P,) moved: a zero to ±``ZERO_JITTER``·(1 + u), any other
    entry away from zero by ``MOVE_ULPS`` relative units; nothing else."""
    key_sign, key_size = jax.random.split(key)
    sign = jnp.where(jax.random.bernoulli(key_sign, shape=theta.shape), 1.0, -1.0).astype(theta.dtype)
    fresh = sign * ZERO_JITTER * (1 + jax.random.uniform(key_size, theta.shape, theta.dtype))
    moved = jnp.where(theta == 0, fresh, theta * (1 + MOVE_ULPS * jnp.finfo(theta.dtype).eps))
    return jnp.where(flagged, moved, theta)


@partial(jax.jit, static_argnames="dims")
def jitter_round(theta, dims: tuple[int, ...], key):
    """One round of the jitter: move every entry of θ (P,) that ``violations`` flags, and nothing else.
    Without control flow, so it is cheap inside the training scan; a coincidence that a move creates
    (vanishingly rare) is caught by the next round."""
    return _move(theta, _flagged(theta, dims), key)


@partial(jax.jit, static_argnames="dims")
def project_jitter(theta, dims: tuple[int, ...], key):
    """Jitter rounds until θ (P,) is generic (at most ``MAX_ROUNDS``). The identity, bit for bit, on a
    generic θ. Each round checks θ once: the mask that decides whether to go on is the one it moves by."""

    def body(state):
        theta, flagged, key, rounds = state
        key, key_round = jax.random.split(key)
        theta = _move(theta, flagged, key_round)
        return theta, _flagged(theta, dims), key, rounds + 1

    def cond(state):
        _, flagged, _, rounds = state
        return (rounds < MAX_ROUNDS) & jnp.any(flagged)

    theta, _, _, _ = jax.lax.while_loop(cond, body, (theta, _flagged(theta, dims), key, 0))
    return theta


# ----------------------------------------------------------------------------------------------------------
# Diagnostics (host-side NumPy) and the margin projection (pure JAX, jit-able).


@lru_cache(maxsize=8)
def _fractions(ratio_bound: int):
    """The reduced fractions p/q ≥ 1 with 1 ≤ q ≤ p ≤ ratio_bound, sorted: (values, p, q), each (F,).
    (Every |ratio| is oriented to be ≥ 1, so the fractions below 1 are not needed.)"""
    p, q = np.meshgrid(np.arange(1, ratio_bound + 1), np.arange(1, ratio_bound + 1), indexing="ij")
    keep = (p >= q) & (np.gcd(p, q) == 1)
    p, q = p[keep], q[keep]
    values = p / q
    order = np.argsort(values)
    out = values[order], p[order], q[order]
    for a in out:
        a.flags.writeable = False  # cached: shared between calls
    return out


def _closest_rational_ratio(w, ratio_bound: int):
    """Over every column k of w (d_out, d_in) and every pair of rows j < j' with non-zero entries: the
    ratio r = max/min of |w_jk|, |w_j'k| (≥ 1) closest, in relative distance |r − p/q| / (p/q), to a
    fraction p/q with p, q ≤ ratio_bound. Vectorised: all pair ratios at once, located in the sorted
    fractions by ``searchsorted``. Returns a dict, or None when no pair exists."""
    a = np.abs(w)
    rows_a, rows_b = np.triu_indices(a.shape[0], k=1)
    if rows_a.size == 0:
        return None
    top, bottom = a[rows_a, :], a[rows_b, :]  # (pairs, d_in)
    valid = (top > 0) & (bottom > 0)
    if not valid.any():
        return None
    hi, lo = np.maximum(top, bottom), np.minimum(top, bottom)
    r = np.where(valid, hi / np.where(valid, lo, 1.0), np.inf)
    values, p, q = _fractions(ratio_bound)
    right = np.clip(np.searchsorted(values, r), 0, len(values) - 1)
    left = np.clip(right - 1, 0, len(values) - 1)
    rel_right = np.abs(r - values[right]) / values[right]
    rel_left = np.abs(r - values[left]) / values[left]
    idx = np.where(rel_left < rel_right, left, right)
    rel = np.where(valid, np.minimum(rel_left, rel_right), np.inf)
    pair, col = np.unravel_index(np.argmin(rel), rel.shape)
    j, jj = int(rows_a[pair]), int(rows_b[pair])
    f = int(idx[pair, col])
    sign = int(np.sign(w[j, col] * w[jj, col]))
    # orient p/q as w_jk / w_j'k (row j over row j'): p/q when |w_jk| ≥ |w_j'k|, else q/p
    num, den = (int(p[f]), int(q[f])) if a[j, col] >= a[jj, col] else (int(q[f]), int(p[f]))
    return {
        "rel_distance": float(rel[pair, col]),
        "p": sign * num,
        "q": den,
        "ratio": float(w[j, col] / w[jj, col]),
        "rows": (j, jj),
        "column": int(col),
        "weights": (float(w[j, col]), float(w[jj, col])),
    }


def genericity_report(theta, dims: tuple[int, ...], ratio_bound: int = 100) -> list[dict]:
    """How far θ (P,) is from violating C1–C3, per layer l = 1..L (host-side NumPy, not jit-able).

    Each layer's dict: ``layer`` (1-based), ``shape`` (d_l, d_{l-1}); ``min_abs_weight`` and its
    ``min_abs_weight_index`` (j, k); ``min_abs_bias`` and ``min_abs_bias_index``; ``min_bias_gap``, the
    smallest difference of the sorted |b| (None for a single bias), with ``min_bias_gap_pair`` (i, j) and
    ``min_bias_gap_rel`` (the gap over the larger |b|, what C2 tests); ``closest_ratio``: None for a single
    row, else a dict with ``rel_distance`` = |r − p/q|/(p/q), the fraction ``p``/``q`` (signed, oriented as
    ``ratio`` = w_jk / w_j'k), ``rows`` (j, j'), ``column`` k, ``weights``; then booleans ``C1``, ``C2``,
    ``C3`` (True = satisfied) and ``generic`` (all three). With the module's tolerance
    rtol = TOLERANCE_ULPS·eps(dtype): C1 fails on an exact zero, C2 when two non-zero |b| agree within rtol
    relative (zeros are left to C1, as in ``violations``), C3 when a weight ratio is within rtol relative
    of some ±p/q with p, q ≤ ``ratio_bound`` (``violations`` uses ``RATIO_BOUND``; pass ``ratio_bound=
    RATIO_BOUND`` to match it). The whole network is generic when every layer is: ``report_generic``."""
    theta = np.asarray(theta)
    if not np.issubdtype(theta.dtype, np.floating):
        theta = theta.astype(np.float64)
    rtol = _tolerance(theta.dtype)
    report = []
    for l, ((ws, bs), d_in, d_out) in enumerate(zip(layer_slices(dims), dims[:-1], dims[1:]), start=1):
        w, b = theta[ws].reshape(d_out, d_in), theta[bs]
        aw, ab = np.abs(w), np.abs(b)
        jw = np.unravel_index(np.argmin(aw), aw.shape)
        jb = int(np.argmin(ab))
        entry = {
            "layer": l,
            "shape": (d_out, d_in),
            "min_abs_weight": float(aw[jw]),
            "min_abs_weight_index": (int(jw[0]), int(jw[1])),
            "min_abs_bias": float(ab[jb]),
            "min_abs_bias_index": jb,
            "min_bias_gap": None,
            "min_bias_gap_pair": None,
            "min_bias_gap_rel": None,
        }
        c2 = True
        if d_out > 1:
            order = np.argsort(ab, kind="stable")
            sorted_ab = ab[order]
            gaps = np.diff(sorted_ab)
            k = int(np.argmin(gaps))
            entry["min_bias_gap"] = float(gaps[k])
            entry["min_bias_gap_pair"] = (int(order[k]), int(order[k + 1]))
            nonzero = sorted_ab[:-1] > 0  # pairs with a zero are C1's business
            rel = np.where(nonzero, gaps / np.where(sorted_ab[1:] > 0, sorted_ab[1:], 1.0), np.inf)
            entry["min_bias_gap_rel"] = float(rel.min()) if np.isfinite(rel.min()) else None
            c2 = not bool(np.any(rel <= rtol))
        ratio = _closest_rational_ratio(w, ratio_bound)
        entry["closest_ratio"] = ratio
        entry["C1"] = bool(np.all(w != 0) and np.all(b != 0))
        entry["C2"] = c2
        entry["C3"] = bool(ratio is None or ratio["rel_distance"] > rtol)
        entry["generic"] = entry["C1"] and entry["C2"] and entry["C3"]
        report.append(entry)
    return report


def report_generic(report: list[dict]) -> bool:
    """The overall flag: every layer of a ``genericity_report`` satisfies C1–C3."""
    return all(entry["generic"] for entry in report)


def format_report(report: list[dict]) -> str:
    """A ``genericity_report`` as text for the terminal: one block per layer, numbers aligned."""

    def num(x):
        return f"{'—':>11}" if x is None else f"{x:11.4e}"

    def ok(flag):
        return "ok" if flag else "VIOLATED"

    lines = []
    for e in report:
        lines.append(f"layer {e['layer']}  W {e['shape'][0]}×{e['shape'][1]}   "
                     f"C1 {ok(e['C1'])}  C2 {ok(e['C2'])}  C3 {ok(e['C3'])}")
        j, k = e["min_abs_weight_index"]
        lines.append(f"  min |w|          {num(e['min_abs_weight'])}   at W[{j},{k}]")
        lines.append(f"  min |b|          {num(e['min_abs_bias'])}   at b[{e['min_abs_bias_index']}]")
        if e["min_bias_gap"] is None:
            lines.append(f"  min |b| gap      {num(None)}   (single bias)")
        else:
            i, jj = e["min_bias_gap_pair"]
            lines.append(f"  min |b| gap      {num(e['min_bias_gap'])}   b[{i}], b[{jj}]; "
                         f"relative {num(e['min_bias_gap_rel']).strip()}")
        r = e["closest_ratio"]
        if r is None:
            lines.append(f"  closest ratio    {num(None)}   (single row)")
        else:
            (j, jj), k = r["rows"], r["column"]
            lines.append(f"  closest ratio    {num(r['rel_distance'])}   W[{j},{k}]/W[{jj},{k}] = {r['ratio']:.6g}"
                         f" ≈ {r['p']}/{r['q']} (relative distance)")
    lines.append(f"generic: {'yes' if report_generic(report) else 'NO'}")
    return "\n".join(lines)


def _isotonic(y):
    """Least-squares non-decreasing fit of y (n,) (isotonic regression), by the min–max formula
    x_i = max_{j ≤ i} min_{k ≥ i} mean(y_j..y_k): O(n³) work without control flow, so jit-able; n is one
    layer's width. Monotone exactly in floating point (the candidate sets only grow/shrink with i)."""
    n = y.shape[0]
    idx = jnp.arange(n)
    j, m, k = idx[:, None, None], idx[None, :, None], idx[None, None, :]
    inside = (j <= m) & (m <= k)  # [j, m, k]: y_m in the block j..k
    sums = jnp.einsum("jmk,m->jk", inside.astype(y.dtype), y)
    means = sums / jnp.maximum(idx[None, :] - idx[:, None] + 1, 1).astype(y.dtype)  # [j, k]
    i = idx[:, None, None]
    inner = jnp.min(jnp.where((idx[None, None, :] >= i) & (idx[None, :, None] <= idx[None, None, :]),
                              means[None, :, :], jnp.inf), axis=2)  # [i, j]: min over k ≥ i
    return jnp.max(jnp.where(idx[None, :] <= idx[:, None], inner, -jnp.inf), axis=1)


def _margin_slack(a, eps):
    """Rounding slack of the margin tests on |b| values a (n,): a few ulps of the largest value reached."""
    n = a.shape[0]
    return 16 * jnp.finfo(a.dtype).eps * (jnp.max(a) + (n + 1) * eps)


def _project_bias_margin(b, eps):
    """Euclidean projection of one layer's biases b (n,) onto {|c_i| ≥ eps, sorted |c| at least eps
    apart}, keeping each sign (0 -> +) and the order of |b|: with a = sorted |b| and c_i = u_i + i·eps
    (i = 1..n), min Σ (c_i − a_i)² s.t. c_1 ≥ eps, c_{i+1} − c_i ≥ eps is min Σ (u_i − (a_i − i·eps))²
    s.t. 0 ≤ u_1 ≤ u_2 ≤ ..., whose solution is max(isotonic(a − i·eps), 0). A layer that already
    satisfies the constraints (up to a few ulps) is returned bit for bit."""
    n = b.shape[0]
    a = jnp.abs(b)
    order = jnp.argsort(a, stable=True)
    a_sorted = a[order]
    steps = jnp.arange(1, n + 1, dtype=b.dtype) * eps
    c = jnp.maximum(_isotonic(a_sorted - steps), 0) + steps
    sign = jnp.where(b < 0, -1.0, 1.0).astype(b.dtype)
    projected = jnp.zeros_like(b).at[order].set(c) * sign
    slack = _margin_slack(a, eps)
    feasible = (a_sorted[0] >= eps - slack) & jnp.all(jnp.diff(a_sorted) >= eps - slack)
    return jnp.where(feasible, b, projected)


@partial(jax.jit, static_argnames="dims")
def project_margin(theta, dims: tuple[int, ...], eps):
    """Euclidean projection of θ (P,) onto {|w| ≥ eps for every weight, |b| ≥ eps for every bias, sorted
    |b| within each layer (output layer included) at least eps apart}, keeping signs and the order of |b|
    (``projection = "margin"``). Pure JAX, jit-able (``dims`` static, ``eps`` may be traced).

    Weights: w -> sign(w)·max(|w|, eps), a zero weight goes to +eps. Biases: ``_project_bias_margin`` per
    layer (a zero bias goes to the + side). Keeping signs and order loses nothing: the constraint set is
    symmetric under sign changes and permutations of one layer's biases, and matching sorted targets to
    sorted |b| is optimal (rearrangement inequality), so this is the projection onto the whole (non-convex)
    set; at ties (equal |b|, zero entries) it picks one of the nearest points. Idempotent; the identity,
    bit for bit, on a θ that already satisfies the constraints (entries with |w| ≥ eps, bias layers that
    are feasible up to a few ulps)."""
    theta = jnp.asarray(theta)
    eps = jnp.asarray(eps, theta.dtype)
    out = theta
    for ws, bs in layer_slices(dims):
        w = theta[ws]
        out = out.at[ws].set(jnp.where(jnp.abs(w) >= eps, w, jnp.where(w < 0, -eps, eps)))
        out = out.at[bs].set(_project_bias_margin(theta[bs], eps))
    return out
