"""The fused CPU kernel (l2rebound.kernel) against the NumPy reference: loss, gradient and outputs for
several architectures, sample counts that do not fill a block, batches of runs (spread over threads: the
same bits as run by run), its tanh, and the exactly-zero gradient of a student equal to its teacher; in
float32, against XLA's float32 programs and its own float32 tanh and genericity check; its Threefry hash
against known answers, NumPy and XLA's own lowering. And its build at first use: into the cache (reused by
the next process), one warning and XLA alone without a compiler or when the build fails, nothing global
changed in JAX unless asked."""

import json
import os
import platform
import shlex
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import brute_force_violations

from l2rebound import Config, genericity, kernel, nets, reference, train
from l2rebound.experiments import run_experiment
from l2rebound.nets import layer_slices, num_params
from l2rebound.train import step_loss_and_grad

pytestmark = pytest.mark.usefixtures("x64")


@pytest.fixture(scope="module")
def kernel_on():
    """Skip a test that needs the kernel where it cannot serve (no compiler, switched off, not a CPU)."""
    if kernel.switched_off():
        pytest.skip("the kernel is switched off (L2REBOUND_KERNEL=0)")
    if kernel.find_compiler() is None:
        pytest.skip("no C++ compiler: the kernel cannot be built here")
    if not (kernel.enabled(jnp.float64) and kernel.enabled(jnp.float32)):
        pytest.skip("the kernel does not serve here (not a CPU backend, or its build failed: see the warning)")


F32_TOL = 2.0**-16
"""Kernel against XLA in float32, relative to the largest magnitude compared: 256 units of float32's rounding
unit u = 2^-24. The two round differently (their own tanh, within 3 and 5 ulp; products and sums over
samples in another order), so each carries its own rounding error; for these sizes (dot products of up to 60
terms through up to 4 layers, sums over up to 300 samples, accumulated in float32) both stay within some tens
of u of the float64 reference (measured: at most 40 u). 256 u leaves that margin, and is still 2^-16: far
below what a wrong term or a float64/float32 mix-up would give, and far above float64's agreement (1e-13)."""


def _problem(dims, n, seed, runs=None):
    rng = np.random.default_rng(seed)
    lead = () if runs is None else (runs,)
    theta = rng.normal(size=lead + (num_params(dims),))
    return theta, rng.uniform(-1, 1, lead + (n, dims[0])), rng.normal(size=lead + (n, dims[-1]))


def _python(script, *args, **env):
    """Run ``script`` in a fresh interpreter with ``env`` added to this environment (a value None removes
    the variable); its completed process, which must have succeeded."""
    environment = {**os.environ, **env}
    environment = {k: v for k, v in environment.items() if v is not None}
    done = subprocess.run([sys.executable, "-c", script, *args], env=environment, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr  # with the child's error output, which check=True would not show
    return done


def _last_json(done):
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fake_compiler(path, version, compile_line):
    """A shell script at ``path`` that answers ``--version`` with ``version`` and otherwise runs
    ``compile_line``, logging each call's arguments to ``path``.log."""
    path.write_text(f'#!/bin/sh\necho "$@" >> "{path}.log"\n'
                    f'if [ "$1" = --version ]; then echo "{version}"; exit 0; fi\n{compile_line}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# --- building at first use ------------------------------------------------------------------------------

@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="built where CI runs")
def test_kernel_builds_wherever_a_compiler_exists():
    # a failed build falls back to XLA with only a warning; where a compiler exists, that is a bug
    if kernel.switched_off() or kernel.find_compiler() is None:
        pytest.skip("switched off, or no C++ compiler here")
    assert kernel.available(), "a C++ compiler exists but the kernel did not build: see the KernelUnavailableWarning"
    assert kernel.fast_path(jnp.float64) == kernel.fast_path(jnp.float32) == "fused-kernel"
    assert kernel.enabled(jnp.float32) and kernel.enabled(np.float32) and kernel.enabled("float32")
    assert not kernel.enabled(jnp.float16) and not kernel.enabled(jnp.bfloat16)


_NOTHING_GLOBAL = """
import jax, numpy as np
import l2rebound.kernel as k
assert not k._loaded, "importing the module must not build or load the kernel"
with jax.enable_x64(True):
    k.forward(np.ones(13), (2, 3, 1), np.ones((5, 2))).block_until_ready()   # uses the kernel where it serves
text = jax.jit(jax.extend.random.threefry_2x32).lower(np.zeros(2, np.uint32), np.zeros(2, np.uint32)).as_text()
jax.export.export(jax.jit(lambda seed: jax.random.normal(jax.random.key(seed), (3,))))(np.int32(0))
print(k.available(), "l2rebound" in text)
"""


def test_using_the_kernel_changes_nothing_global_in_jax():
    # importing and using it leaves jax.random's lowering alone, so a user's program that draws still exports
    done = _python(_NOTHING_GLOBAL)
    assert done.stdout.split()[-1] == "False"


@pytest.mark.parametrize("no_compiler", [{"CXX": "/nonexistent"}, {"CXX": None, "PATH": "EMPTY"}],
                         ids=["CXX-missing", "none-on-PATH"])
def test_without_a_compiler_one_warning_and_training_runs_through_xla(no_compiler, tmp_path):
    script = ("import json; from l2rebound import Config, kernel; from l2rebound.experiments import run_experiment; "
              "cfg = Config(teacher_dims=(2, 4, 1), dataset_size=64, test_set_size=16, epochs=5, runs=2); "
              "r = run_experiment(cfg); r2 = run_experiment(cfg); "  # twice: the warning still shows once
              "print(json.dumps([kernel.available(), kernel.fast_path('float64'), r.metrics['l2'].tolist()]))")
    env = {k: str(tmp_path) if v == "EMPTY" else v for k, v in no_compiler.items()}
    done = _python(script, L2REBOUND_CACHE=str(tmp_path / "cache"), **env)
    available, path, l2 = _last_json(done)
    assert not available and path == "xla"
    assert np.all(np.isfinite(l2))
    warned = [line for line in done.stderr.splitlines() if "no C++17 compiler found" in line]
    assert len(warned) == 1, done.stderr
    assert all(word in warned[0] for word in ("KernelUnavailableWarning", "XLA alone", "install"))
    assert not (tmp_path / "cache").exists()


def test_a_failed_build_names_its_first_error_and_keeps_a_log(tmp_path):
    failing = _fake_compiler(tmp_path / "cxx", "fake 1.0", 'echo "x.cc:1:1: error: no such thing" >&2; exit 1')
    with pytest.raises(kernel._BuildError) as raised:
        kernel.build([failing], tmp_path / "cache")
    first, log = raised.value.args
    assert first == "x.cc:1:1: error: no such thing"
    assert "error: no such thing" in log.read_text()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [log.name]  # no half-written library left


def test_the_library_name_changes_with_the_compiler_version(tmp_path):
    one = _fake_compiler(tmp_path / "one", "fake 1.0", "exit 0")
    two = _fake_compiler(tmp_path / "two", "fake 2.0", "exit 0")
    assert kernel.library_name([one]) == kernel.library_name([one]) != kernel.library_name([two])


@pytest.mark.skipif(kernel.find_compiler() is None, reason="no C++ compiler")
def test_a_second_process_reuses_the_built_library(tmp_path):
    real = kernel.find_compiler()
    version = subprocess.run([*real, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    cxx = _fake_compiler(tmp_path / "cxx", version, f'exec {shlex.join(real)} "$@"')
    script = "import l2rebound.kernel as k; print(k.available())"
    env = {"CXX": cxx, "L2REBOUND_CACHE": str(tmp_path / "cache"), "L2REBOUND_KERNEL": "1"}

    def compiles():
        return sum(" -o " in line for line in (tmp_path / "cxx.log").read_text().splitlines())

    assert _python(script, **env).stdout.split() == ["True"]
    assert compiles() == 1
    assert _python(script, **env).stdout.split() == ["True"]
    assert compiles() == 1
    built = sorted(p.name for p in (tmp_path / "cache" / "kernel").iterdir())
    assert len(built) == 1 and built[0].endswith(".so")  # nothing temporary left behind


# --- the arithmetic -------------------------------------------------------------------------------------

@pytest.mark.usefixtures("kernel_on")
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


@pytest.mark.usefixtures("kernel_on")
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


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("runs", [2, 7, 31])
def test_runs_spread_over_threads_give_the_bits_of_each_run_alone(runs, dtype):
    # one call with a batch of runs spreads them over XLA's threads; each alone takes the serial path
    dims = (2, 25, 25, 1)
    theta, x, y = (a.astype(dtype) for a in _problem(dims, 300, seed=runs, runs=runs))
    x_test = np.random.default_rng(runs).uniform(-1, 1, (runs, 70, 2)).astype(dtype)
    theta[:, ::97] = 0.0  # something for the genericity check to find
    rtol = genericity.TOLERANCE_ULPS * np.finfo(dtype).eps

    def step(t, x, y, x_test):
        loss, grad = kernel.loss_and_grad(t, dims, x, y)
        return loss, grad, kernel.forward(t, dims, x_test), kernel.violations(t, dims, rtol, genericity.RATIO_BOUND)

    batch = jax.jit(jax.vmap(step))(theta, x, y, x_test)
    alone = jax.jit(step)
    for r in range(runs):
        for got, want in zip(batch, alone(theta[r], x[r], y[r], x_test[r])):
            np.testing.assert_array_equal(got[r], want)
    assert np.any(batch[3])
    assert all(a.dtype == dtype for a in batch[:3])


@pytest.mark.usefixtures("kernel_on")
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


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_student_equal_to_teacher_has_exactly_zero_loss_and_gradient(dtype):
    # labels from the kernel's own forward: the residual is zero bit for bit, so nothing moves at sigma = 0
    dims = (2, 25, 25, 1)
    theta, x, _ = (a.astype(dtype) for a in _problem(dims, 1000, seed=5))
    y = kernel.forward(jnp.asarray(theta), dims, x)
    loss, grad = step_loss_and_grad(jnp.asarray(theta), dims, jnp.asarray(x), y)
    assert float(loss) == 0.0
    assert not np.any(np.asarray(grad))


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize(("dtype", "seed", "trials"), [(np.float64, 11, 40), (np.float32, 12, 20)])
def test_violations_match_the_jax_check_on_planted_coincidences(dtype, seed, trials):
    # exact coincidences of every kind (in the dtype's own numbers); a ratio within a few ulps of the
    # tolerance's edge may differ (XLA turns the JAX check's division into a reciprocal multiply), so none is
    # planted there
    dims = (2, 25, 25, 1)
    (_, _), (w2, b2), _ = layer_slices(dims)
    rng = np.random.default_rng(seed)
    rtol = genericity.TOLERANCE_ULPS * np.finfo(dtype).eps
    caught = {"C1": 0, "C2": 0, "C3": 0}
    for _ in range(trials):
        theta = rng.normal(size=num_params(dims)).astype(dtype)
        zero, (bi, bj), (row_a, row_b), col = rng.integers(theta.size), rng.choice(25, 2, replace=False), \
            rng.choice(25, 2, replace=False), rng.integers(25)
        theta[zero] = 0.0
        theta[b2.start + bj] = -theta[b2.start + bi]  # C2: equal |b|
        weight = lambda row, col=col: w2.start + row * 25 + col  # noqa: E731
        theta[weight(row_b)] = theta[weight(row_a)] * rng.integers(1, 11) / rng.integers(1, 11)  # C3: p/q
        expected = np.asarray(genericity.violations(jnp.asarray(theta), dims))
        got = np.asarray(kernel.violations(jnp.asarray(theta), dims, rtol, genericity.RATIO_BOUND))
        np.testing.assert_array_equal(got, expected)
        caught["C1"] += got[zero]
        caught["C2"] += got[b2.start + max(bi, bj)]
        caught["C3"] += got[weight(max(row_a, row_b))]
    assert caught == {"C1": trials, "C2": trials, "C3": trials}


def _through_xla(fields: dict):
    """The experiment of ``Config(**fields)`` in a process with the kernel off (what a GPU runs): the path its
    dtype took there, and its ℓ₂ and train loss (lists, runs × epochs)."""
    script = ("import json, sys; from l2rebound import Config, kernel; "
              "from l2rebound.experiments import run_experiment; "
              "config = Config(**json.loads(sys.argv[1])); r = run_experiment(config); "
              "print(json.dumps([kernel.fast_path(config.dtype), r.metrics['l2'].tolist(), "
              "r.metrics['train_loss'].tolist()]))")
    return _last_json(_python(script, json.dumps(fields), L2REBOUND_KERNEL="0"))


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize("fields", [{"initial_permut": 1e-2, "train": "drr"},
                                    {"initial_permut": 0.0, "noise_sigma": 0.0}],
                         ids=["preset-A-like", "exact-start-sigma-0"])
def test_xla_path_trains_to_the_same_numbers(fields):
    # the fallback (no compiler, L2REBOUND_KERNEL=0; what a GPU runs) against the kernel, same config; at an
    # exact start with sigma = 0 both must keep the student exactly on its teacher
    fields = {**fields, "runs": 2, "epochs": 20, "dataset_size": 300, "test_set_size": 50}
    path, l2, loss = _through_xla(fields)
    assert path == "xla"
    mine = run_experiment(Config(**fields))
    np.testing.assert_allclose(mine.metrics["l2"], l2, rtol=1e-12)
    np.testing.assert_allclose(mine.metrics["train_loss"], loss, rtol=1e-10)
    if fields["initial_permut"] == 0:
        assert not np.any(l2) and not np.any(mine.metrics["l2"]) and not np.any(loss)


def test_float32_exact_start_stays_on_its_teacher():
    # labels and the step both come from the kernel where it serves float32, else both from XLA (what a GPU
    # runs; forced in a second process): the residual is zero bit for bit, so the student never leaves its teacher
    fields = {"initial_permut": 0.0, "noise_sigma": 0.0, "runs": 2, "epochs": 10, "dataset_size": 200,
              "test_set_size": 20, "dtype": "float32"}
    result = run_experiment(Config(**fields))
    assert result.manifest["fast_path"] == kernel.fast_path("float32")
    assert not np.any(result.metrics["l2"]) and not np.any(result.metrics["train_loss"])
    path, l2, loss = _through_xla(fields)
    assert path == "xla" and not np.any(l2) and not np.any(loss)


def test_shapes_that_do_not_match_dims_are_refused():
    theta = jnp.zeros(num_params((2, 7, 3)))
    with pytest.raises(ValueError, match="dims"):
        kernel.loss_and_grad(theta, (2, 7, 3), jnp.ones((50, 8)), jnp.ones((50, 3)))
    if kernel.enabled(jnp.float64):
        with pytest.raises(ValueError, match="dims"):
            kernel.forward(theta, (2, 7, 3), jnp.ones((50, 8)))


@pytest.mark.usefixtures("kernel_on")
def test_mixed_dtypes_are_refused_by_the_step_and_promoted_by_forward():
    # the kernel's targets take one dtype throughout; forward falls back to nets.forward, which promotes
    dims = (2, 7, 3)
    theta, x, y = _problem(dims, 50, seed=1)
    assert not kernel.serves(jnp.asarray(theta, jnp.float32), jnp.asarray(x))
    with pytest.raises(TypeError, match="one dtype"):
        kernel.loss_and_grad(jnp.asarray(theta, jnp.float32), dims, jnp.asarray(x), jnp.asarray(y, jnp.float32))
    out = kernel.forward(jnp.asarray(theta, jnp.float32), dims, jnp.asarray(x))
    assert out.dtype == jnp.float64
    np.testing.assert_array_equal(out, nets.forward(jnp.asarray(theta, jnp.float32), dims, jnp.asarray(x)))


# --- float32 --------------------------------------------------------------------------------------------

def test_the_kernel_serves_float32_on_a_cpu():
    if kernel.switched_off() or kernel.find_compiler() is None or jax.default_backend() != "cpu":
        pytest.skip("switched off, no C++ compiler, or not a CPU backend")
    assert kernel.enabled(jnp.float32) and kernel.fast_path("float32") == "fused-kernel"


def _close(got, want, reference, what):
    """|got - want| within F32_TOL of the largest |reference|, elementwise."""
    scale = np.abs(np.asarray(reference, np.float64)).max()
    error = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max()
    assert error <= F32_TOL * scale, f"{what}: {error:.3g} > {F32_TOL:.3g} * {scale:.3g}"


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize("dims", [(2, 25, 25, 1), (3, 40, 60, 30, 2), (2, 5, 4, 3, 1), (1, 70, 3)],
                         ids=lambda d: ",".join(map(str, d)))
@pytest.mark.parametrize("n", [1, 127, 300])
def test_float32_matches_xla_float32_under_vmap(dims, n):
    """Loss, gradient and outputs of a batch of 3 runs under jax.vmap, float32 in and out, against XLA's
    float32 programs (``train.loss_and_grad``, ``nets.forward``), and both against the float64 reference
    computed from the same float32 inputs; within F32_TOL (256 float32 rounding units, see there) of the
    largest magnitude. n = 127 leaves the kernel's 128-sample float32 block one short."""
    theta, x, y = (a.astype(np.float32) for a in _problem(dims, n, seed=n + sum(dims), runs=3))
    mine = jax.jit(jax.vmap(lambda t, x, y: kernel.loss_and_grad(t, dims, x, y)))(theta, x, y)
    xla = jax.jit(jax.vmap(lambda t, x, y: train.loss_and_grad(t, dims, x, y)))(theta, x, y)
    out = jax.jit(jax.vmap(lambda t, x: kernel.forward(t, dims, x)))(theta, x)
    out_xla = jax.jit(jax.vmap(lambda t, x: nets.forward(t, dims, x)))(theta, x)
    assert all(a.dtype == jnp.float32 for a in (*mine, *xla, out, out_xla))
    for r in range(3):
        t_ref, x_ref, y_ref = (a[r].astype(np.float64) for a in (theta, x, y))
        ref_loss, ref_grad = reference.loss_and_grad(t_ref, dims, x_ref, y_ref)
        for got, want, ref, what in ((mine[0][r], xla[0][r], ref_loss, "loss"),
                                     (mine[1][r], xla[1][r], ref_grad, "gradient"),
                                     (out[r], out_xla[r], reference.forward(t_ref, dims, x_ref), "outputs")):
            _close(got, want, ref, what)
            _close(got, ref, ref, what + " against float64")
            _close(want, ref, ref, what + " of XLA against float64")


@pytest.mark.usefixtures("kernel_on")
def test_float32_tanh_within_four_ulp_and_special_values():
    # about 3 ulp of float32 at worst (3.05 over every float32 in [2^-20, 12]); XLA's own float32 tanh: 4.5
    dims = (1, 1, 1)
    identity = jnp.array([1.0, 0.0, 1.0, 0.0], jnp.float32)  # h = tanh(x), output h
    tiny = np.finfo(np.float32).tiny  # below it the CPU treats inputs as zero (flush to zero, as XLA's threads)
    z = np.concatenate([np.linspace(-25, 25, 200_001), np.geomspace(tiny, 1e-3, 1000),
                        -np.geomspace(1e-12, 3, 1000)]).astype(np.float32)
    out = np.asarray(kernel.forward(identity, dims, z[:, None]))[:, 0].astype(np.float64)
    exact = np.tanh(z.astype(np.float64))
    assert np.max(np.abs(out - exact) / np.spacing(np.abs(exact).astype(np.float32))) <= 4
    special = np.asarray(kernel.forward(identity, dims, np.array([[np.nan], [np.inf], [-np.inf], [40.0], [-1e3]],
                                                                  np.float32)))
    assert special.dtype == np.float32 and np.isnan(special[0, 0])
    np.testing.assert_array_equal(special[1:, 0], [1.0, -1.0, 1.0, -1.0])


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize("dims", [(3, 9, 7, 2), (2, 25, 25, 1), (2, 130, 90, 1)], ids=lambda d: ",".join(map(str, d)))
def test_float32_check_decides_as_comparing_every_pair_in_float32(dims):
    # float32's own tolerance (4 float32 epsilons) and arithmetic; columns over 64 rows take the sorted path
    rng = np.random.default_rng(sum(dims) + 32)
    rtol = genericity.TOLERANCE_ULPS * np.finfo(np.float32).eps
    flagged = 0
    for trial in range(20):
        theta = adversarial(rng, dims) if trial % 2 else rng.normal(size=num_params(dims))
        theta = theta.astype(np.float32)
        nudge = rng.random(theta.size) < 0.1  # a few float32 ulps off the planted coincidences
        theta[nudge] *= 1 + rng.integers(-6, 7, nudge.sum()).astype(np.float32) * np.finfo(np.float32).eps
        got = np.asarray(kernel.violations(jnp.asarray(theta), dims, rtol, genericity.RATIO_BOUND))
        np.testing.assert_array_equal(got, brute_force_violations(theta, dims), err_msg=f"trial {trial}")
        flagged += got.sum()
    assert flagged >= 10


# --- Threefry -------------------------------------------------------------------------------------------

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


@pytest.mark.usefixtures("kernel_on")
def test_threefry_matches_known_answers_and_numpy():
    # the kernel's hash called directly (registering it as jax's lowering is process-wide: a subprocess below)
    threefry = jax.jit(kernel._threefry2x32)
    # Random123's known-answer vectors for Threefry-2x32-20: key, counter, result
    for key, count, want in [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
                             ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
                             ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]:
        assert [int(v) for v in threefry(*np.uint32(key), *np.uint32(count))] == list(want)
    rng = np.random.default_rng(0)
    shape_sets = [((), (), (5, 7), (5, 7)), ((3, 1), (3, 1), (3, 4), (3, 4)), ((4,),) * 4, ((), (), (0,), (0,))]
    for shapes in shape_sets:
        operands = [rng.integers(0, 2**32, size=shape, dtype=np.uint32) for shape in shapes]
        for got, want in zip(threefry(*operands), _threefry_numpy(*operands)):
            assert got.dtype == jnp.uint32
            np.testing.assert_array_equal(got, want)


_DRAWS = """
import json, sys, jax, numpy as np
import l2rebound.kernel as k
used = k.use_threefry_lowering() if sys.argv[1] == "use" else None
key = jax.random.key(42)
draws = [jax.random.uniform(key, (7, 3)), jax.random.normal(jax.random.fold_in(key, 3), (1001,)),
         jax.random.key_data(jax.random.split(key, 5)), jax.random.bernoulli(key, 0.3, (33,)),
         jax.vmap(lambda s: jax.random.normal(s, (4,)))(jax.random.split(key, 3)),
         jax.random.randint(key, (50,), 0, 1000)]
text = jax.jit(jax.extend.random.threefry_2x32).lower(np.zeros(2, np.uint32), np.zeros(2, np.uint32)).as_text()
try:
    jax.export.export(jax.jit(lambda seed: jax.random.normal(jax.random.key(seed), (3,))))(np.int32(0))
    exports = True
except ValueError:
    exports = False
print(json.dumps([used, "l2rebound_threefry2x32" in text, exports] + \
[np.asarray(d).astype(float).tolist() for d in draws]))
"""


@pytest.mark.usefixtures("kernel_on")
def test_threefry_lowering_only_when_asked_and_the_same_bits():
    used, lowered, exports, *mine = _last_json(_python(_DRAWS, "use"))
    assert used and lowered and not exports  # the documented cost: such programs do not export
    for how in ({}, {"L2REBOUND_KERNEL": "0"}):  # not asked; asked while switched off
        used, lowered, exports, *xla = _last_json(_python(_DRAWS, "use" if how else "no", **how))
        assert used in (None, False) and not lowered and exports
        for a, b in zip(xla, mine):
            np.testing.assert_array_equal(a, b)


def adversarial(rng, dims) -> np.ndarray:
    """θ (P,) full of coincidences: zeros, equal |b| (with signs), exact ratios ±p/q, whole columns of equal
    weights, values a few ulps off a ratio, and an infinite or NaN entry now and then."""
    theta = rng.normal(size=num_params(dims))
    for (ws, bs), d_in, d_out in zip(layer_slices(dims), dims[:-1], dims[1:]):
        w = theta[ws].reshape(d_out, d_in)
        rows = rng.integers(0, d_out, size=d_out)
        scale = rng.integers(1, 11, size=(d_out, 1)) / rng.integers(1, 11, size=(d_out, 1))
        planted = w[rows] * scale * rng.choice([-1.0, 1.0], size=(d_out, 1))
        take = rng.random(w.shape) < 0.3
        w[take] = planted[take]
        w[:, rng.integers(d_in)] = rng.choice([-1.0, 1.0], d_out) * 0.5  # a column of equal |w|
        ulps = rng.integers(-6, 7, size=w.shape)
        nudge = rng.random(w.shape) < 0.1
        w[nudge] = w[nudge] * (1 + ulps[nudge] * np.finfo(np.float64).eps)
        b = theta[bs]
        b[rng.random(d_out) < 0.3] = b[rng.integers(d_out)] * rng.choice([-1.0, 1.0])
        theta[ws] = w.reshape(-1)
    theta[rng.random(theta.size) < 0.05] = 0.0
    if rng.random() < 0.3:
        theta[rng.integers(theta.size)] = rng.choice([np.inf, -np.inf, np.nan])
    return theta


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize("dims", [(2, 3, 1), (3, 9, 7, 2), (2, 25, 25, 1), (4, 40, 3, 33, 1), (2, 130, 90, 1)],
                         ids=lambda d: ",".join(map(str, d)))
def test_the_sorted_check_decides_as_comparing_every_pair(dims):
    rng = np.random.default_rng(sum(dims))
    rtol = genericity.TOLERANCE_ULPS * np.finfo(np.float64).eps
    flagged = 0
    for trial in range(30):
        theta = adversarial(rng, dims) if trial % 2 else rng.normal(size=num_params(dims))
        got = np.asarray(kernel.violations(jnp.asarray(theta), dims, rtol, genericity.RATIO_BOUND))
        np.testing.assert_array_equal(got, brute_force_violations(theta, dims), err_msg=f"trial {trial}")
        flagged += got.sum()
    assert flagged >= 15  # at least one violation in each adversarial network


def _brute_force_c2(b, rtol):
    """C2's decisions for the biases b (d,) by comparing every pair in b's own arithmetic: b_i is flagged when
    |b_i| > 0 and some j < i has ||b_i| - |b_j|| <= rtol·max(|b_i|, |b_j|) (NaN compares false)."""
    a = np.abs(b)
    rtol = a.dtype.type(rtol)
    with np.errstate(all="ignore"):
        close = np.abs(a[:, None] - a[None, :]) <= rtol * np.maximum(a[:, None], a[None, :])  # [i, j]
    return np.any(close & np.tri(a.size, k=-1, dtype=bool), axis=1) & (a > 0)


def _adversarial_biases(rng, d, dtype, rtol):
    """d biases of dtype full of near-coincidences of C2: exact duplicates (either sign), neighbours 1-4 ulps
    apart, values at the tolerance's edge a·(1 - rtol) and a/(1 - rtol) with their neighbouring floats, zeros,
    and, by turns, infinities and NaN or a block of many equal values (more than one window)."""
    b = rng.normal(size=d).astype(dtype)
    base = b[rng.integers(d, size=8)]
    one = dtype(1)
    edges = []
    for a in np.abs(base):
        for e in (a * (one - rtol), a / (one - rtol), a * (one + rtol), a - a * rtol, a + a * rtol):
            edges += [e, np.nextafter(e, dtype(0)), np.nextafter(e, dtype(np.inf))]
        edges += [np.nextafter(a, dtype(np.inf)), np.nextafter(a, dtype(0))]
        edges += [a * (one + k * np.finfo(dtype).eps) for k in (-4, -2, 2, 3, 4)]
    edges = np.asarray(edges, dtype) * rng.choice(np.asarray([-1, 1], dtype), len(edges))
    where = rng.choice(d, size=min(d // 2, len(edges)), replace=False)
    b[where] = edges[: where.size]
    b[rng.random(d) < 0.1] = b[rng.integers(d)] * rng.choice(np.asarray([-1, 1], dtype))  # duplicates
    b[rng.random(d) < 0.05] = 0
    if rng.random() < 0.5:
        b[rng.integers(d, size=3)] = rng.choice(np.asarray([np.inf, -np.inf, np.nan], dtype), 3)
    else:  # many equal |b|: more values in one window than the sorted path looks at
        block = rng.choice(d, size=80, replace=False)
        b[block] = np.abs(base[0]) * rng.choice(np.asarray([-1, 1], dtype), 80)
    rng.shuffle(b)
    return b


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("width", [130, 600])
def test_the_sorted_bias_check_decides_as_comparing_every_pair(width, dtype):
    # layers of over 64 biases take the sorted path (or fall back to every pair); its decisions must be those
    # of every pair, also at the tolerance's edge, for zeros, infinities and NaN
    dims = (2, width, 1)
    (_, bs), _ = layer_slices(dims)
    rng = np.random.default_rng(width + np.dtype(dtype).itemsize)
    rtol = genericity._tolerance(dtype)
    flagged = 0
    for trial in range(40):
        theta = rng.normal(size=num_params(dims)).astype(dtype)
        if trial % 4 == 1:  # random biases, a few of them a few ulps apart
            b = theta[bs]
            near = rng.choice(width, size=10, replace=False)
            b[near[5:]] = b[near[:5]] * (1 + rng.integers(-4, 5, 5).astype(dtype) * np.finfo(dtype).eps)
        elif trial % 4 >= 2:
            theta[bs] = _adversarial_biases(rng, width, dtype, rtol)
        got = np.asarray(kernel.violations(jnp.asarray(theta), dims, rtol, genericity.RATIO_BOUND))
        assert got.dtype == bool
        expected = _brute_force_c2(theta[bs], rtol) | (theta[bs] == 0)  # and C1's zeros
        np.testing.assert_array_equal(got[bs], expected, err_msg=f"trial {trial}")
        flagged += got[bs].sum()
    assert flagged >= 100


@pytest.mark.usefixtures("kernel_on")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_sorted_bias_check_decides_as_every_pair_for_tiny_biases(dtype):
    # biases near and below the smallest normal, whose gaps underflow: XLA's threads flush subnormals to zero,
    # which NumPy does not, so the pairs are decided by the kernel itself, one network of two biases each
    width = 130
    dims, pair = (2, width, 1), (1, 2, 1)
    (_, bs), _ = layer_slices(dims)
    (_, pair_bs), _ = layer_slices(pair)
    rng = np.random.default_rng(7 + np.dtype(dtype).itemsize)
    rtol = genericity._tolerance(dtype)
    info = np.finfo(dtype)
    tiny = 2 * info.tiny / (16 * info.eps)  # below this |b|, the sorted path leaves the layer to every pair
    later, earlier = np.tril_indices(width, k=-1)
    for trial in range(6):
        scale = np.asarray([info.smallest_subnormal, info.tiny, tiny, 1.0][trial % 4], dtype)
        b = (scale * rng.choice([1, 2, 3, 1024, 1025, 2**20, 2**20 + 1], width)).astype(dtype)
        b[rng.random(width) < 0.2] = 0
        if trial >= 4:
            b[rng.integers(width, size=3)] = np.asarray([np.inf, -np.inf, np.nan], dtype)
        b *= rng.choice(np.asarray([-1, 1], dtype), width)
        theta = rng.normal(size=num_params(dims)).astype(dtype)
        theta[bs] = b
        got = np.asarray(kernel.violations(jnp.asarray(theta), dims, rtol, genericity.RATIO_BOUND))[bs]
        pairs = rng.normal(size=(later.size, num_params(pair))).astype(dtype)
        pairs[:, pair_bs] = np.stack([b[earlier], b[later]], axis=1)
        accepted = np.asarray(kernel.violations(jnp.asarray(pairs), pair, rtol, genericity.RATIO_BOUND))
        expected = np.zeros(width, bool)  # C1 and C2 as decided in the pairs: the first bias's mask is its C1
        np.logical_or.at(expected, earlier, accepted[:, pair_bs.start])
        np.logical_or.at(expected, later, accepted[:, pair_bs.start + 1])
        np.testing.assert_array_equal(got, expected, err_msg=f"trial {trial}")
