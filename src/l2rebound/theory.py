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
non-increasing whenever ηλ_max ≤ 2. Experiments B and C start at the teacher (δ_0 = 0): the prediction
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

from l2rebound.data import Split
from l2rebound.nets import forward
from l2rebound.precision import float64
from l2rebound.train import loss_and_grad

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


def flat_fraction(vectors, deltas, k) -> np.ndarray:
    """Fraction of ‖δ‖² in the k flattest eigen-directions (the first k columns of ``vectors`` (P, P),
    eigenvalues ascending) for displacements ``deltas`` (T, P), e.g. θ_s − θ_t at snapshot epochs.
    Shape (T,) for an integer k, (T, K) for a sequence of K values; NaN where δ = 0."""
    energy = (np.asarray(deltas, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64)) ** 2
    cumulative = np.concatenate([np.zeros((len(energy), 1)), np.cumsum(energy, axis=1)], axis=1)
    total = cumulative[:, -1:] if np.ndim(k) else cumulative[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return cumulative[:, k] / total


def _run_terms(teacher, dims, train: Split, student_init) -> tuple[Spectrum, np.ndarray, np.ndarray]:
    """One run's ingredients: the Gauss–Newton spectrum at its teacher, the unit-noise pull g(σ = 1)
    (P,) and the start's displacement δ_0 = student_init − teacher (P,)."""
    gn = spectrum(gauss_newton(teacher, dims, train.x))
    unit = np.asarray(noise_gradient(teacher, dims, train.x, train.z, 1.0))
    return gn, unit, np.asarray(student_init) - np.asarray(teacher)


def _prediction(l2, gn: Spectrum, learning_rate: float) -> dict[str, np.ndarray]:
    """The dict ``predict_run`` and ``predict_noise`` return: the predicted ℓ₂ and the spectrum."""
    return {"l2": l2, "gn_eigenvalues": gn.values, "gn_eigenvectors": gn.vectors,
            "time_constants": time_constants(gn.values, learning_rate)}


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
    gn, unit, delta0 = _run_terms(teacher, dims, train, student_init)
    return _prediction(linear_response(gn, delta0, sigma * unit, learning_rate, epochs), gn, learning_rate)


@float64
def predict_noise(teacher, dims: tuple[int, ...], train: Split, student_init, levels, learning_rate: float,
                  epochs: int) -> dict[str, np.ndarray]:
    """The prediction for one run of the noise experiment: like ``predict_run``, but ``l2`` (S,) is the
    final ‖δ_E‖ at each noise level σ of ``levels`` (S,); the run's inputs and unit noise z are
    ``train``. δ_E = (decay of δ_0) + σ·(response to unit noise), both computed once; with δ_0 = 0 (the
    default start) the prediction is exactly σ times that of σ = 1."""
    gn, unit, delta0 = _run_terms(teacher, dims, train, student_init)
    start = components(gn, delta0, np.zeros_like(unit), learning_rate, [epochs])[0]
    noise = components(gn, np.zeros_like(unit), unit, learning_rate, [epochs])[0]
    l2 = np.linalg.norm(start + np.asarray(levels, dtype=np.float64)[:, None] * noise, axis=1)
    return _prediction(l2, gn, learning_rate)


@float64
def analyze(result, on_progress=None) -> dict[str, np.ndarray]:
    """The linear-response analysis of a stored epoch or noise result, from each run's own teacher, data
    and noise (drawn again from the config exactly as the experiment drew them; raises ``ValueError`` if
    the stored starts cannot be reproduced). ``on_progress(n)``: called with 1 after each run.

    Returns, with R runs, P student parameters, E epochs and S noise levels:
      predicted_l2: (R, E + 1) for the epoch experiment, (S, R) for the noise experiment;
      gn_eigenvalues: (R, P) each run's Gauss–Newton spectrum at its teacher, ascending;
      unsettled: (R,) directions whose time constant 1/(ηλ) exceeds E (numerically null ones included);
      null: (R,) numerically null directions (``null_directions``);
      hessian_eigenvalues: (P,) the exact Hessian's spectrum at run 1's teacher on its noisy labels
          (epoch: σ = ``noise_sigma``; noise: the largest level), ascending;
      epoch only: flat_fraction (R, K, 3) of ‖θ_s − θ_t‖² at the kept epochs (K,) in the null, the
          unsettled, and all but the stiffest direction (k = null, unsettled, P − 1 flattest).
    """
    from l2rebound.experiments import setup_runs  # experiments imports the engine; keep theory light

    if not result.spec.theory:
        raise ValueError(f"the linear-response theory does not model the {result.kind} experiment")
    config = result.config
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
    out = {"predicted_l2": [], "gn_eigenvalues": [], "unsettled": [], "null": []}
    flat = []
    for r in range(config.runs):
        teacher, train = teachers[r], Split(*(a[r] for a in splits))
        if noise:
            run = predict_noise(teacher, dims, train, starts[r], result.levels, eta, epochs)
        else:
            run = predict_run(teacher, dims, train, starts[r], config.noise_sigma, eta, epochs)
        values = run["gn_eigenvalues"]
        counts = [int(null_directions(values).sum()), unsettled(values, eta, epochs)]
        if not noise:
            flat.append(flat_fraction(run["gn_eigenvectors"], result.kept_theta[r] - teacher,
                                      [*counts, len(values) - 1]))
        for name, value in zip(out, (run["l2"], values, counts[1], counts[0])):
            out[name].append(value)
        if on_progress:
            on_progress(1)
    out = {name: np.asarray(values) for name, values in out.items()}
    if noise:
        out["predicted_l2"] = out["predicted_l2"].T
        sigma = float(np.max(result.levels))
    else:
        out["flat_fraction"] = np.asarray(flat)
        sigma = config.noise_sigma
    teacher, train = teachers[0], Split(*(a[0] for a in splits))
    out["hessian_eigenvalues"] = np.linalg.eigvalsh(np.asarray(hessian(teacher, dims, train.x, train.labels(sigma))))
    return out
