"""The fused CPU kernel (l2rebound.kernel) against the NumPy reference: loss, gradient and outputs for
several architectures, sample counts that do not fill a block, batches of runs, its tanh, and the
exactly-zero gradient of a student equal to its teacher; its Threefry hash against known answers, NumPy
and XLA's own lowering."""

import json
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2rebound import Config, genericity, kernel, reference
from l2rebound.experiments import run_experiment
from l2rebound.nets import layer_slices, num_params
from l2rebound.train import step_loss_and_grad

needs_kernel = pytest.mark.skipif(not kernel.enabled(jnp.float64), reason="kernel not built or not on a CPU")


def _problem(dims, n, seed, runs=None):
    rng = np.random.default_rng(seed)
    lead = () if runs is None else (runs,)
    theta = rng.normal(size=lead + (num_params(dims),))
    return theta, rng.uniform(-1, 1, lead + (n, dims[0])), rng.normal(size=lead + (n, dims[-1]))


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="built where CI runs")
def test_kernel_is_built_where_ci_runs():
    # a failed build installs silently without the kernel (setup.py: optional); this makes it loud
    assert kernel.built()


@needs_kernel
@pytest.mark.parametrize("dims", [(2, 25, 25, 1), (3, 4, 5, 2), (2, 5, 4, 3, 1), (2, 1), (1, 70, 3)])
@pytest.mark.parametrize("n", [1, 63, 64, 130])
def test_loss_grad_and_forward_match_reference(dims, n):
    theta, x, y = _problem(dims, n, seed=n + sum(dims))
    loss, grad = jax.jit(lambda t, x, y: kernel.loss_and_grad(t, dims, x, y))(theta, x, y)
    ref_loss, ref_grad = reference.loss_and_grad(theta, dims, x, y)
    assert loss.dtype == grad.dtype == jnp.float64
    assert float(loss) == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-13 * np.abs(ref_grad).max())
    np.testing.assert_allclose(kernel.forward(jnp.asarray(theta), dims, x), reference.forward(theta, dims, x),
                               rtol=0, atol=1e-13)


@needs_kernel
def test_batches_of_runs_under_vmap_match_run_by_run():
    dims = (2, 7, 3)
    theta, x, y = _problem(dims, 100, seed=3, runs=4)
    loss, grad = jax.jit(jax.vmap(lambda t, x, y: kernel.loss_and_grad(t, dims, x, y)))(theta, x, y)
    out = jax.vmap(lambda t, x: kernel.forward(t, dims, x))(theta, x)
    for r in range(4):
        ref_loss, ref_grad = reference.loss_and_grad(theta[r], dims, x[r], y[r])
        assert float(loss[r]) == pytest.approx(ref_loss, rel=1e-13)
        np.testing.assert_allclose(grad[r], ref_grad, rtol=0, atol=1e-13 * np.abs(ref_grad).max())
        np.testing.assert_allclose(out[r], reference.forward(theta[r], dims, x[r]), rtol=0, atol=1e-13)


@needs_kernel
def test_tanh_within_four_ulp_and_special_values():
    dims = (1, 1, 1)
    identity = jnp.array([1.0, 0.0, 1.0, 0.0])  # h = tanh(x), output h
    z = np.concatenate([np.linspace(-25, 25, 200_001), np.geomspace(1e-300, 1e-3, 1000), -np.geomspace(1e-12, 3, 1000)])
    out = np.asarray(kernel.forward(identity, dims, z[:, None]))[:, 0]
    exact = np.tanh(z)
    assert np.max(np.abs(out - exact) / np.spacing(np.abs(exact))) <= 4
    special = np.asarray(kernel.forward(identity, dims, np.array([[np.nan], [np.inf], [-np.inf], [40.0], [-1e3]])))
    assert np.isnan(special[0, 0])
    np.testing.assert_array_equal(special[1:, 0], [1.0, -1.0, 1.0, -1.0])


@needs_kernel
def test_student_equal_to_teacher_has_exactly_zero_loss_and_gradient():
    # labels from the kernel's own forward: the residual is zero bit for bit, so nothing moves at sigma = 0
    dims = (2, 25, 25, 1)
    theta, x, _ = _problem(dims, 1000, seed=5)
    y = kernel.forward(jnp.asarray(theta), dims, x)
    loss, grad = step_loss_and_grad(jnp.asarray(theta), dims, jnp.asarray(x), y)
    assert float(loss) == 0.0
    assert not np.any(np.asarray(grad))


@needs_kernel
def test_violations_match_the_jax_check_on_planted_coincidences():
    # exact coincidences of every kind; a ratio within a few ulps of the tolerance's edge may differ
    # (XLA turns the JAX check's division into a reciprocal multiply), so none is planted there
    dims = (2, 25, 25, 1)
    (_, _), (w2, b2), _ = layer_slices(dims)
    rng = np.random.default_rng(11)
    rtol = genericity.TOLERANCE_ULPS * np.finfo(np.float64).eps
    caught = {"C1": 0, "C2": 0, "C3": 0}
    for _ in range(40):
        theta = rng.normal(size=num_params(dims))
        zero, (bi, bj), (row_a, row_b), col = rng.integers(theta.size), rng.choice(25, 2, replace=False), \
            rng.choice(25, 2, replace=False), rng.integers(25)
        theta[zero] = 0.0
        theta[b2.start + bj] = -theta[b2.start + bi]  # C2: equal |b|
        weight = lambda row: w2.start + row * 25 + col  # noqa: E731
        theta[weight(row_b)] = theta[weight(row_a)] * rng.integers(1, 11) / rng.integers(1, 11)  # C3: p/q
        expected = np.asarray(genericity.violations(jnp.asarray(theta), dims))
        got = np.asarray(kernel.violations(jnp.asarray(theta), dims, rtol, genericity.RATIO_BOUND))
        np.testing.assert_array_equal(got, expected)
        caught["C1"] += got[zero]
        caught["C2"] += got[b2.start + max(bi, bj)]
        caught["C3"] += got[weight(max(row_a, row_b))]
    assert caught == {"C1": 40, "C2": 40, "C3": 40}


@needs_kernel
@pytest.mark.parametrize("fields", [{"initial_permut": 1e-2, "train": "drr"}, {"initial_permut": 0.0, "noise_sigma": 0.0}],
                         ids=["preset-A-like", "exact-start-sigma-0"])
def test_xla_path_trains_to_the_same_numbers(fields):
    # the fallback (no compiler, L2REBOUND_KERNEL=0; what a GPU runs) against the kernel, same config; at an
    # exact start with sigma = 0 both must keep the student exactly on its teacher
    fields = {**fields, "runs": 2, "epochs": 20, "dataset_size": 300, "test_set_size": 50}
    script = ("import json, sys; from l2rebound import Config, kernel; from l2rebound.experiments import run_experiment; "
              "r = run_experiment(Config(**json.loads(sys.argv[1]))); "
              "print(json.dumps([kernel.enabled('float64'), r.metrics['l2'].tolist(), r.metrics['train_loss'].tolist()]))")
    env = {**os.environ, "L2REBOUND_KERNEL": "0"}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(fields)], env=env, capture_output=True, text=True,
                         check=True)
    enabled, l2, loss = json.loads(out.stdout.strip().splitlines()[-1])
    assert not enabled
    mine = run_experiment(Config(**fields))
    np.testing.assert_allclose(mine.metrics["l2"], l2, rtol=1e-12)
    np.testing.assert_allclose(mine.metrics["train_loss"], loss, rtol=1e-10)
    if fields["initial_permut"] == 0:
        assert not np.any(l2) and not np.any(mine.metrics["l2"]) and not np.any(loss)


def _threefry_numpy(k1, k2, x1, x2):
    """Threefry-2x32 with 20 rounds in NumPy (uint32 arithmetic wraps), the operands broadcast together."""
    k1, k2, x1, x2 = np.broadcast_arrays(*(np.asarray(a, np.uint32) for a in (k1, k2, x1, x2)))
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    v0, v1 = x1 + ks[0], x2 + ks[1]
    for group in range(1, 6):
        for r in ((13, 15, 26, 6), (17, 29, 16, 24))[(group - 1) % 2]:
            v0 = v0 + v1
            v1 = ((v1 << np.uint32(r)) | (v1 >> np.uint32(32 - r))) ^ v0
        v0, v1 = v0 + ks[group % 3], v1 + ks[(group + 1) % 3] + np.uint32(group)
    return v0, v1


hashes_random = pytest.mark.skipif(not kernel.built() or kernel.SWITCHED_OFF, reason="kernel not built or off")


@hashes_random
def test_threefry_matches_known_answers_and_numpy():
    threefry = jax.jit(jax.extend.random.threefry_2x32)
    assert "l2rebound_threefry2x32" in threefry.lower(np.zeros(2, np.uint32), np.zeros(2, np.uint32)).as_text()
    # Random123's known-answer vectors for Threefry-2x32-20: key, counter, result
    for key, count, want in [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
                             ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
                             ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]:
        assert [int(v) for v in threefry(np.uint32(key), np.uint32(count))] == list(want)
    rng = np.random.default_rng(0)
    hash_p = jax.jit(jax.extend.random.threefry2x32_p.bind)
    shape_sets = [((), (), (5, 7), (5, 7)), ((3, 1), (3, 1), (3, 4), (3, 4)), ((4,),) * 4, ((), (), (0,), (0,))]
    for shapes in shape_sets:
        operands = [rng.integers(0, 2**32, size=shape, dtype=np.uint32) for shape in shapes]
        for got, want in zip(hash_p(*operands), _threefry_numpy(*operands)):
            assert got.dtype == jnp.uint32
            np.testing.assert_array_equal(got, want)


@hashes_random
def test_random_draws_are_the_same_bits_as_without_the_kernel():
    script = ("import json, jax, numpy as np, l2rebound.kernel as k; key = jax.random.key(42); "
              "draws = [jax.random.uniform(key, (7, 3)), jax.random.normal(jax.random.fold_in(key, 3), (1001,)), "
              "jax.random.key_data(jax.random.split(key, 5)), jax.random.bernoulli(key, 0.3, (33,)), "
              "jax.vmap(lambda s: jax.random.normal(s, (4,)))(jax.random.split(key, 3)), "
              "jax.random.randint(key, (50,), 0, 1000)]; "
              "print(json.dumps([k.SWITCHED_OFF] + [np.asarray(d).astype(float).tolist() for d in draws]))")

    def draws(switch):
        out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "L2REBOUND_KERNEL": switch},
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    (off, *xla), (on, *mine) = draws("0"), draws("1")
    assert off and not on
    for a, b in zip(xla, mine):
        np.testing.assert_array_equal(a, b)


def test_float32_exact_start_stays_on_its_teacher():
    # float32 never uses the kernel: labels and the step both come from XLA, which must agree bit for bit
    result = run_experiment(Config(initial_permut=0.0, noise_sigma=0.0, runs=2, epochs=10, dataset_size=200,
                                   test_set_size=20, dtype="float32"))
    assert not np.any(result.metrics["l2"]) and not np.any(result.metrics["train_loss"])


def test_shapes_that_do_not_match_dims_are_refused():
    theta = jnp.zeros(num_params((2, 7, 3)))
    with pytest.raises(ValueError, match="dims"):
        kernel.loss_and_grad(theta, (2, 7, 3), jnp.ones((50, 8)), jnp.ones((50, 3)))
    if kernel.enabled(jnp.float64):
        with pytest.raises(ValueError, match="dims"):
            kernel.forward(theta, (2, 7, 3), jnp.ones((50, 8)))
