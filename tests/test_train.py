"""The JAX engine against the NumPy reference, finite differences, divergence and the projection schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2rebound import Config
from l2rebound.experiments import hyper_of, setup_runs, train_runs
from l2rebound.nets import forward
from l2rebound.train import loss_and_grad

pytestmark = pytest.mark.usefixtures("x64")  # the engine's internals, called directly, in float64

SMALL = dict(teacher_dims=(2, 6, 5, 1), dataset_size=300, test_set_size=60, runs=2, epochs=50)


def _start(config):
    seeds = config.seed + np.arange(1, config.runs + 1)
    return setup_runs(config, seeds, seeds)


def test_gradient_matches_finite_differences():
    config = Config(**SMALL)
    _, problem, student, _ = _start(config)
    theta, x, y = student[0], problem.train.x[0], problem.train.labels(0.1)[0]
    grad = loss_and_grad(theta, config.student_dims, x, y)[1]
    h = 1e-6
    picked = np.random.default_rng(0).choice(theta.size, 12, replace=False)
    steps = jnp.zeros((len(picked), theta.size), theta.dtype).at[np.arange(len(picked)), picked].set(h)

    @jax.jit
    def central_differences(steps):  # one compiled program for every probed coordinate
        loss = jax.vmap(lambda t: loss_and_grad(t, config.student_dims, x, y)[0])
        return (loss(theta + steps) - loss(theta - steps)) / (2 * h)

    fd = np.asarray(central_differences(steps))
    np.testing.assert_array_less(np.abs(fd - np.asarray(grad)[picked]), 1e-7 * np.maximum(1.0, np.abs(fd)))


def test_divergence_stops_one_run_and_keeps_the_others():
    config = Config(**{**SMALL, "runs": 3}, learning_rate=1.0, noise_sigma=0.0, initial_permut=0.1)
    _, problem, student, keys = _start(config)
    hyper = hyper_of(config, 3)
    hyper = hyper._replace(learning_rate=jnp.asarray([1e-2, 1e3, 1e-2]))  # run 2 blows up
    metrics, diverged, _, _ = train_runs(config, hyper, problem, student, keys)
    assert diverged[0] == -1 and diverged[2] == -1
    assert 0 < diverged[1] <= config.epochs
    assert np.isnan(metrics["l2"][1, diverged[1]:]).all()
    assert np.isfinite(metrics["l2"][1, : diverged[1]]).all()
    assert np.isfinite(metrics["l2"][[0, 2]]).all()


@pytest.mark.parametrize("epochs, jittered", [(2, False), (3, True), (5, True)])
def test_projection_runs_after_epochs_n_2n_not_before(epochs, jittered):
    # A wider student started exactly at the padded teacher: the padding is exactly zero and, with no
    # signal through the extra unit, gets zero gradient. Only the projection (every 3 epochs) moves it.
    config = Config(**{**SMALL, "epochs": epochs, "runs": 1}, student_dims=(2, 7, 5, 1), noise_sigma=1e-3,
                    projection_frequency=3)
    _, problem, student, keys = _start(config)
    _, _, final, _ = train_runs(config, hyper_of(config, 1), problem, student, keys)
    padding = np.asarray(student[0]) == 0
    assert padding.sum() > 0
    if jittered:
        assert (final[0][padding] != 0).all()
        assert (np.abs(final[0][padding]) < 1e-5).all()
    else:
        assert (final[0][padding] == 0).all()


@pytest.mark.parametrize("n", [7, 2000, 4001])
def test_blocked_gradient_equals_one_pass(n):
    config = Config(**SMALL)
    _, problem, student, _ = _start(config)
    x = jax.random.uniform(jax.random.key(n), (n, 2), jnp.float64, -1, 1)
    y = jax.random.normal(jax.random.key(n + 1), (n, 1), jnp.float64)
    loss, grad = loss_and_grad(student[0], config.student_dims, x, y)
    one_pass = lambda t: jnp.mean((forward(t, config.student_dims, x) - y) ** 2)  # noqa: E731
    ref_loss, ref_grad = jax.value_and_grad(one_pass)(student[0])
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-16)


def test_float32_runs_in_float32_and_a_mixed_start_is_refused():
    config = Config(**{**SMALL, "epochs": 3}, dtype="float32", initial_permut=0.01)
    _, problem, student, keys = _start(config)
    assert student.dtype == problem.train.x.dtype == jnp.float32
    metrics, _, final, _ = train_runs(config, hyper_of(config, config.runs), problem, student, keys)
    assert final.dtype == np.float32 and metrics["l2"].dtype == np.float32
    with pytest.raises(TypeError, match="float64"):
        train_runs(config, hyper_of(config, config.runs), problem, student.astype(jnp.float64), keys)
