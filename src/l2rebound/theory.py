"""Linear-response theory of gradient descent near the teacher.

Write δ = θ − θ_t for the student's displacement from the teacher (padded to the student's shape, P
parameters) and n = N·dL for the number of trained outputs. The loss is the engine's, the mean of the
squared error over samples and outputs (``train.loss_and_grad``). With J the (n, P) Jacobian of the
outputs at the teacher and labels y = f(θ_t) + ε, ε = σz, its gradient is, to first order in δ and σ,
``H δ − g`` with

    H = (2/n) JᵀJ   (the Gauss–Newton matrix, the Hessian of the loss at the teacher on clean labels),
    g = (2/n) Jᵀε   (minus the loss gradient at the teacher on noisy labels).

Plain GD with step η therefore follows δ_{t+1} = (I − ηH) δ_t + η g, solved in H's eigenbasis
(H = V diag(λ) Vᵀ, a = Vᵀδ_0, b = Vᵀg) by

    c_i(t) = (1 − ηλ_i)^t a_i + (1 − (1 − ηλ_i)^t) / λ_i · b_i,      δ_t = V c(t),  ‖δ_t‖ = ‖c(t)‖.

Experiment A (σ = 0) is the first term alone: each direction decays as (1 − ηλ_i)^t, so ℓ₂ is
non-increasing whenever ηλ_max ≤ 2 — without a regulariser.

With a training rule's regulariser R (``rules``), the step adds ∇R at the student, evaluated exactly (not
linearised: DRR's gradient jumps where a parameter crosses 0, as the teacher's ±1e-6 biases do):

    δ_{t+1} = δ_t − η (H δ_t − g + ∇R(θ_t + δ_t)).

Its solution is δ_t = δ^loss_t + d_t: the loss-only response above plus the regulariser's drift d, which
follows d_{t+1} = (I − ηH) d_t − η ∇R(θ_t + δ^loss_t + d_t) from d_0 = 0 (``regularised_response``). Along a
stiff direction (ηλE ≫ 1) the drift settles at −H⁺∇R; along a flat one it accumulates, −η Σ_t ∇R. Where ∇R
is proportional to α (``l1``; ``drr`` with ρ = 0) the flat part therefore depends on η and α only through
ηα: its path is a function of ηα·t. Experiments B and C start at the teacher (δ_0 = 0): the prediction
is the second term alone, linear in σ. Units: θ, δ and ℓ₂ in parameter units; λ in loss per parameter²
(H is a Hessian of the loss); η in parameter² per loss, so ηλ is a dimensionless rate per epoch and
1/(ηλ) a time constant in epochs.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2rebound.config import alpha_of
from l2rebound.data import Split
from l2rebound.nets import forward
from l2rebound.precision import float64
from l2rebound.train import Hyper, Spec, loss_and_grad, regulariser_grad

TANGENT_BLOCK = 32
"""Hessian columns computed together (forward-over-reverse, memory ∝ block · N · width, so bounded for
wide networks too). For the default network and N = 10 000 on 2 busy cores, blocks of 1 to 128 all took
3–11 s; on an H100 all P columns at once took 13 ms."""


class Spectrum(NamedTuple):
    """Eigen-decomposition of a symmetric (P, P) matrix: ``values`` (P,) ascending, ``vectors`` (P, P)
    orthonormal columns, ``vectors[:, i]`` belonging to ``values[i]``."""

    values: np.ndarray
    vectors: np.ndarray


def spectrum(matrix) -> Spectrum:
    """Eigen-decomposition of a symmetric matrix (P, P) in float64 (NumPy's ``eigh``)."""
    values, vectors = np.linalg.eigh(np.asarray(matrix, dtype=np.float64))
    return Spectrum(values, vectors)


@float64
@partial(jax.jit, static_argnames="dims")
def jacobian(theta, dims: tuple[int, ...], x):
    """Jacobian of the network outputs w.r.t. θ (P,) at inputs x (N, d0): shape (N·dL, P), row
    ``i·dL + k`` for sample i and output k (the order of ``y.reshape(-1)``). One reverse pass per sample,
    vmapped: memory N·dL·P floats (60 MB for N = 10 000, P = 751)."""

    def one(sample):
        return jax.jacrev(lambda t: forward(t, dims, sample[None])[0])(theta)

    return jax.vmap(one)(x).reshape(-1, theta.size)


@float64
@partial(jax.jit, static_argnames="dims")
def gauss_newton(theta, dims: tuple[int, ...], x):
    """The Gauss–Newton matrix (2/(N·dL)) JᵀJ at θ (P,) for inputs x (N, d0): shape (P, P), positive
    semi-definite; the exact Hessian of the loss where the residuals vanish."""
    jac = jacobian(theta, dims, x)
    return (2.0 / jac.shape[0]) * jac.T @ jac


@float64
@partial(jax.jit, static_argnames="dims")
def hessian(theta, dims: tuple[int, ...], x, y):
    """Exact Hessian (P, P) of the train loss (the engine's ``loss_and_grad``) at θ (P,), inputs x
    (N, d0), labels y (N, dL): forward-mode derivatives of the gradient, ``TANGENT_BLOCK`` columns at a
    time; symmetric up to rounding. It is the Gauss–Newton matrix plus (2/(N·dL)) Σ_i r_i ∇²f_i
    with r = f(x) − y the residuals."""

    def column(tangent):
        return jax.jvp(lambda t: loss_and_grad(t, dims, x, y)[1], (theta,), (tangent,))[1]

    return jax.lax.map(column, jnp.eye(theta.size, dtype=theta.dtype), batch_size=TANGENT_BLOCK)


@float64
@partial(jax.jit, static_argnames="dims")
def noise_gradient(theta, dims: tuple[int, ...], x, z, sigma):
    """g = (2/(N·dL)) Jᵀ(σz) (P,): the pull of label noise σz (z of shape (N, dL)) at the teacher θ,
    i.e. minus the loss gradient there when its clean labels are its own outputs. One reverse pass."""
    _, pullback = jax.vjp(lambda t: forward(t, dims, x), theta)
    return (2.0 * sigma / z.size) * pullback(z.astype(theta.dtype))[0]


def null_directions(values, rtol: float | None = None) -> np.ndarray:
    """Mask (P,) of the numerically null eigenvalues: |λ| ≤ rtol · max|λ|, by default rtol = P·ε (ε the
    float64 machine epsilon; NumPy's ``matrix_rank`` convention).

    ``eigh`` of H resolves an eigenvalue only to about ε·‖H‖, and the Gauss–Newton spectra of tanh
    networks fall off geometrically right down to that floor (no gap: for (2, 25, 25, 1) and N = 10 000
    about 700 of the 751 eigenvalues lie below 1e-15 · λ_max, half of them "negative"). Below the
    tolerance λ and the eigenvectors within that cluster are rounding noise, so the linear response
    treats these directions as exactly null: δ_0's component stays constant and g's component is
    dropped. That is exact in the limit, because g = (2/n)Jᵀε lies in the range of Jᵀ, i.e. of H (its
    computed component there is rounding, ~ε‖g‖). The choice of rtol hardly matters for a prediction:
    a direction just above it moves by η·t·b_i with b_i ∝ √λ_i, far below the settled directions'
    b_i/λ_i."""
    values = np.asarray(values, dtype=np.float64)
    rtol = values.size * np.finfo(np.float64).eps if rtol is None else rtol
    return np.abs(values) <= rtol * np.abs(values).max()


def time_constants(values, learning_rate: float, rtol: float | None = None) -> np.ndarray:
    """1/(ηλ_i) (P,) in epochs for Gauss–Newton eigenvalues λ (P,); ``inf`` for null directions."""
    values = np.asarray(values, dtype=np.float64)
    null = null_directions(values, rtol)
    return np.where(null, np.inf, 1.0 / (learning_rate * np.where(null, 1.0, values)))


def unsettled(values, learning_rate: float, epochs: int, rtol: float | None = None) -> int:
    """Number of directions whose time constant 1/(ηλ) exceeds ``epochs`` (null directions included)."""
    return int(np.sum(time_constants(values, learning_rate, rtol) > epochs))


def components(spec: Spectrum, delta0, g, learning_rate: float, times, rtol: float | None = None) -> np.ndarray:
    """Predicted displacement in the eigenbasis, c(t) = Vᵀδ_t, at the epochs ``times`` (T,): shape
    (T, P), column i along ``spec.vectors[:, i]``. δ_0 (P,) is the start minus the teacher, g (P,) the
    noise pull (``noise_gradient``). Null directions (``null_directions``) keep a_i and drop b_i. The
    factor 1 − (1 − ηλ)^t is computed as −expm1(t·log1p(−ηλ)) where ηλ < 1, accurate for the slowest
    directions."""
    times = np.asarray(times, dtype=np.float64)[:, None]
    rate = learning_rate * spec.values
    null = null_directions(spec.values, rtol)
    slow = rate < 1
    log_keep = np.log1p(-np.where(slow, rate, 0.0))
    keep = np.where(slow, np.exp(times * log_keep), (1.0 - rate) ** times)  # (1 − ηλ)^t
    gone = np.where(slow, -np.expm1(times * log_keep), 1.0 - keep)  # 1 − (1 − ηλ)^t
    a = np.asarray(delta0, dtype=np.float64) @ spec.vectors
    b = np.asarray(g, dtype=np.float64) @ spec.vectors
    return np.where(null, a, keep * a + gone / np.where(null, 1.0, spec.values) * b)


def linear_response(spec: Spectrum, delta0, g, learning_rate: float, epochs: int,
                    rtol: float | None = None) -> np.ndarray:
    """Predicted ℓ₂(t) = ‖δ_t‖ for t = 0..E: shape (E + 1,) (``components`` for the arguments; memory
    (E + 1)·P floats while it runs)."""
    return np.linalg.norm(components(spec, delta0, g, learning_rate, np.arange(epochs + 1), rtol), axis=1)


@partial(jax.jit, static_argnames=("rule", "dims", "per_layer"))
def _drift(h, teacher, start, noise, sigmas, hyper: Hyper, learning_rate, rule: str, dims: tuple[int, ...],
           per_layer: bool):
    """The iteration of ``regularised_response``, compiled. For each σ of ``sigmas`` (S,), with the loss-only
    response δ^loss_t = start[t] + σ·noise[t] ((E + 1, P) each), iterate the drift d from 0 through epochs
    0..E − 1. Returns ‖δ^loss_t + d_t‖ for t = 0..E, (S, E + 1), and d_E, (S, P)."""
    spec = Spec(dims, rule, "gd", "off", 0, per_layer)

    def one(sigma):
        def step(d, paths):
            loss = paths[0] + sigma * paths[1]
            pull = h @ d + regulariser_grad(spec, hyper, teacher + loss + d)
            return d - learning_rate * pull, jnp.linalg.norm(loss + d)

        final, l2 = jax.lax.scan(step, jnp.zeros_like(teacher), (start[:-1], noise[:-1]))
        return jnp.append(l2, jnp.linalg.norm(start[-1] + sigma * noise[-1] + final)), final

    return jax.vmap(one)(sigmas)


@float64
def regularised_response(gn: Spectrum, teacher, delta0, g_unit, sigmas, learning_rate: float, epochs: int,
                         hyper: Hyper, rule: str, dims: tuple[int, ...], rtol: float | None = None,
                         per_layer: bool = True) -> dict:
    """The linear response with the regulariser of the training rule ``rule`` kept exact (module docstring),
    for one run at each noise level of ``sigmas`` (S,).

    gn: the Gauss–Newton spectrum at the run's teacher θ_t (P,) (padded to the student's shape); δ_0 (P,): the
    start minus the teacher; g_unit (P,): the pull of unit noise (``noise_gradient`` at σ = 1); hyper: the
    rule's strengths. H's numerically null directions count as exactly flat (λ = 0), as in ``components``.
    Returns
      l2: (S, E + 1), the predicted ‖δ_t‖ for t = 0..E;
      parts: (S, 4), the final displacement's norm along the settled directions (1/(ηλ) ≤ E) and along the
          others, of its loss-only part δ^loss_E and of the drift d_E, in that order.
    """
    times = np.arange(epochs + 1)
    vectors = gn.vectors
    zeros = np.zeros_like(g_unit)
    start = components(gn, delta0, zeros, learning_rate, times, rtol) @ vectors.T
    noise = components(gn, zeros, g_unit, learning_rate, times, rtol) @ vectors.T
    stiffness = np.where(null_directions(gn.values, rtol), 0.0, gn.values)
    h = (vectors * stiffness) @ vectors.T
    sigmas = np.asarray(sigmas, dtype=np.float64)
    l2, drift = (np.asarray(a) for a in _drift(h, np.asarray(teacher, np.float64), start, noise, sigmas, hyper,
                                                learning_rate, rule, dims, per_layer))
    settled = time_constants(gn.values, learning_rate, rtol) <= epochs
    parts = []
    for final in (start[-1] + sigmas[:, None] * noise[-1], drift):
        along = final @ vectors
        parts += [np.linalg.norm(along[:, settled], axis=1), np.linalg.norm(along[:, ~settled], axis=1)]
    return {"l2": l2, "parts": np.stack(parts, axis=1)}


def flat_fraction(vectors, deltas, k) -> np.ndarray:
    """Fraction of ‖δ‖² in the k flattest eigen-directions (the first k columns of ``vectors`` (P, P),
    eigenvalues ascending) for displacements ``deltas`` (T, P), e.g. θ_s − θ_t at snapshot epochs.
    Shape (T,) for an integer k, (T, K) for a sequence of K values; NaN where δ = 0."""
    energy = (np.asarray(deltas, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64)) ** 2
    cumulative = np.concatenate([np.zeros((len(energy), 1)), np.cumsum(energy, axis=1)], axis=1)
    total = cumulative[:, -1:] if np.ndim(k) else cumulative[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return cumulative[:, k] / total


def _teacher_terms(teacher, dims, train: Split) -> tuple[Spectrum, np.ndarray]:
    """What a run's teacher and data give the theory: the Gauss–Newton spectrum at the teacher and the
    unit-noise pull g(σ = 1) (P,)."""
    gn = spectrum(gauss_newton(teacher, dims, train.x))
    return gn, np.asarray(noise_gradient(teacher, dims, train.x, train.z, 1.0))


def _prediction(l2, gn: Spectrum, learning_rate: float) -> dict[str, np.ndarray]:
    """The dict ``predict_run`` and ``predict_noise`` return: the predicted ℓ₂ and the spectrum."""
    return {"l2": l2, "gn_eigenvalues": gn.values, "gn_eigenvectors": gn.vectors,
            "time_constants": time_constants(gn.values, learning_rate)}


def _loss_only_noise(gn: Spectrum, unit, delta0, levels, learning_rate: float, epochs: int) -> np.ndarray:
    """The loss-only prediction of the final ‖δ_E‖ at each noise level of ``levels`` (S,): δ_E = (decay of δ_0)
    + σ·(response to unit noise), both computed once; with δ_0 = 0 exactly σ times that of σ = 1."""
    start = components(gn, delta0, np.zeros_like(unit), learning_rate, [epochs])[0]
    noise = components(gn, np.zeros_like(unit), unit, learning_rate, [epochs])[0]
    return np.linalg.norm(start + np.asarray(levels, dtype=np.float64)[:, None] * noise, axis=1)


@float64
def predict_run(teacher, dims: tuple[int, ...], train: Split, student_init, sigma: float, learning_rate: float,
                epochs: int) -> dict[str, np.ndarray]:
    """The linear-response prediction for one run of the epoch experiment (plain GD on the loss alone:
    no regulariser, no projection).

    teacher (P,): the teacher padded to the student's shape (``Problem.teacher`` of the run); train: the
    run's train split; student_init (P,): its start. Returns
      l2 (E + 1,): predicted ‖θ_t − θ_teacher‖ for t = 0..E;
      gn_eigenvalues (P,), gn_eigenvectors (P, P): spectrum of the Gauss–Newton matrix at the teacher;
      time_constants (P,): 1/(ηλ_i) of the Gauss–Newton eigenvalues in epochs (inf for null directions).
    """
    gn, unit = _teacher_terms(teacher, dims, train)
    delta0 = np.asarray(student_init) - np.asarray(teacher)
    return _prediction(linear_response(gn, delta0, sigma * unit, learning_rate, epochs), gn, learning_rate)


@float64
def predict_noise(teacher, dims: tuple[int, ...], train: Split, student_init, levels, learning_rate: float,
                  epochs: int) -> dict[str, np.ndarray]:
    """The prediction for one run of the noise experiment: like ``predict_run``, but ``l2`` (S,) is the
    final ‖δ_E‖ at each noise level σ of ``levels`` (S,); the run's inputs and unit noise z are
    ``train`` (``_loss_only_noise``)."""
    gn, unit = _teacher_terms(teacher, dims, train)
    delta0 = np.asarray(student_init) - np.asarray(teacher)
    return _prediction(_loss_only_noise(gn, unit, delta0, levels, learning_rate, epochs), gn, learning_rate)


def strengths(config) -> Hyper:
    """The scalars the training rule of ``config`` reads (α, β, ρ), as the training step passes them, in
    float64 (the step size and σ enter the theory elsewhere: 0 here)."""
    alpha = alpha_of(config, config.alpha)
    return Hyper(*(np.float64(v) for v in (0.0, 0.0, alpha, config.beta, config.rho, config.margin)))


THEORY_VERSION = 2
"""Stored with every analysis (``version``): raise it with any change that alters an analysis's numbers, so that
a stored one computed by older code is computed again. 2: the regulariser kept exact."""


def is_current(analysis: dict | None) -> bool:
    """Whether a stored analysis was computed by this version's ``analyze`` (``THEORY_VERSION``)."""
    return analysis is not None and "version" in analysis and int(analysis["version"]) == THEORY_VERSION


def _drawn(config) -> tuple:
    """What a run's teacher, its training inputs and its unit noise depend on besides the seeds: runs of two
    configs that agree here (and in their seeds) have the same spectrum and noise pull."""
    return (config.teacher_dims, config.student_dims, config.bias_init, config.projection, config.margin,
            config.dataset_size, config.dtype)


@float64
def analyze(result, on_progress=None, cache: dict | None = None) -> dict[str, np.ndarray]:
    """The linear-response analysis of a stored result whose kind has the ``theory`` capability, from each
    run's own teacher, data and noise (drawn again from the config exactly as the experiment drew them;
    raises ``ValueError`` if the stored starts cannot be reproduced), with the config's regulariser kept
    exact (``regularised_response``). ``on_progress(n)``: called with 1 after each run. ``cache``: a dict
    shared by the analyses of several results (a sweep's cells), in which a run's spectrum, noise pull and
    exact Hessian are kept for every result that draws the same teacher and data.

    Returns, with R runs, P student parameters, E epochs and S noise levels:
      predicted_l2: (R, E + 1) for a kind with curves over epochs, (S, R) over noise levels: the prediction
          with the regulariser;
      predicted_l2_loss_only: the same from the loss alone (no regulariser);
      parts: (R, 4) for curves, (S, R, 4) over levels: the predicted final displacement's norm along the
          settled and the unsettled directions, of its loss-only part and of the regulariser's drift;
      gn_eigenvalues: (R, P) each run's Gauss–Newton spectrum at its teacher, ascending;
      unsettled: (R,) directions whose time constant 1/(ηλ) exceeds E (numerically null ones included);
      null: (R,) numerically null directions (``null_directions``);
      hessian_eigenvalues: (P,) the exact Hessian's spectrum at run 1's teacher on its noisy labels
          (epoch: σ = ``noise_sigma``; noise: the largest level), ascending;
      curves only: flat_fraction (R, K, 3) of ‖θ_s − θ_t‖² at the kept epochs (K,) in the null, the
          unsettled, and all but the stiffest direction (k = null, unsettled, P − 1 flattest).
    """
    from l2rebound.experiments import setup_runs  # experiments imports the engine; keep theory light

    if not result.spec.theory:
        raise ValueError(f"the linear-response theory does not model the {result.kind} experiment")
    config = result.config
    cache = {} if cache is None else cache
    runs = np.arange(1, config.runs + 1)
    noise = not result.spec.curves  # final values over noise levels, else curves over epochs
    teacher_seeds = np.full(config.runs, config.seed) if noise else config.seed + runs
    _, problem, student, _ = setup_runs(config, teacher_seeds, config.seed + runs)
    if not np.array_equal(np.asarray(student), result.student_init):
        raise ValueError("the stored initial students cannot be drawn again from the config (another version or "
                         "machine?): the analysis needs each run's own data")
    dims, eta, epochs = config.student_dims, config.learning_rate, config.epochs
    # the theory is evaluated in float64 whatever the run's dtype: float32 data converts exactly
    teachers, starts = np.asarray(problem.teacher, np.float64), np.asarray(student, np.float64)
    splits = Split(*(np.asarray(a, np.float64) for a in problem.train))
    sigmas = np.asarray(result.levels, float) if noise else np.array([config.noise_sigma])
    hyper, drawn = strengths(config), (_drawn(config), noise)
    out = {name: [] for name in ("predicted_l2", "predicted_l2_loss_only", "parts", "gn_eigenvalues", "unsettled",
                                 "null", "flat_fraction")}
    for r in range(config.runs):
        teacher, train = teachers[r], Split(*(a[r] for a in splits))
        key = (drawn, int(teacher_seeds[r]), int(config.seed + runs[r]))
        if key not in cache:
            cache[key] = _teacher_terms(teacher, dims, train)
        gn, unit = cache[key]
        delta0 = starts[r] - teacher
        response = regularised_response(gn, teacher, delta0, unit, sigmas, eta, epochs, hyper, config.train, dims,
                                        per_layer=config.layer_factors == "on")
        if noise:
            out["predicted_l2"].append(response["l2"][:, -1])
            out["predicted_l2_loss_only"].append(_loss_only_noise(gn, unit, delta0, sigmas, eta, epochs))
            out["parts"].append(response["parts"])
        else:
            out["predicted_l2"].append(response["l2"][0])
            out["predicted_l2_loss_only"].append(linear_response(gn, delta0, sigmas[0] * unit, eta, epochs))
            out["parts"].append(response["parts"][0])
        counts = [int(null_directions(gn.values).sum()), unsettled(gn.values, eta, epochs)]
        if not noise:
            out["flat_fraction"].append(flat_fraction(gn.vectors, result.kept_theta[r] - teacher,
                                                      [*counts, len(gn.values) - 1]))
        out["gn_eigenvalues"].append(gn.values)
        out["unsettled"].append(counts[1])
        out["null"].append(counts[0])
        if on_progress:
            on_progress(1)
    out = {name: np.asarray(values) for name, values in out.items() if len(values)}
    if noise:
        out["predicted_l2"], out["predicted_l2_loss_only"] = out["predicted_l2"].T, out["predicted_l2_loss_only"].T
        out["parts"] = out["parts"].transpose(1, 0, 2)
    sigma = float(np.max(sigmas))
    key = (drawn, int(teacher_seeds[0]), int(config.seed + runs[0]), sigma)
    if key not in cache:
        train = Split(*(a[0] for a in splits))
        cache[key] = np.linalg.eigvalsh(np.asarray(hessian(teachers[0], dims, train.x, train.labels(sigma))))
    out["hessian_eigenvalues"] = cache[key]
    out["version"] = np.asarray(THEORY_VERSION)
    return out
