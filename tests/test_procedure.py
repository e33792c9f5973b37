"""The compression procedure's parts: the saturation test, TAMADE, random-gradient pruning, and the batched
phases (frozen runs, validation selection), on small cases with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2rebound import Config
from l2rebound.config import example
from l2rebound.registry import kind
from l2rebound.stopping import saturated, smoother
from l2rebound.thresholds import magnitude_pruned, random_gradient_pruned, tamade
from l2rebound.train import loss_and_grad

pytestmark = pytest.mark.usefixtures("x64")


# ---- the saturation test ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 5, 15, 16])
def test_the_smoother_reproduces_a_straight_line_and_averages_to_one(n):
    """A local-linear fit is exact on a line, whatever the kernel weights; its rows sum to 1."""
    s = smoother(n)
    line = 0.3 - 0.07 * np.arange(1, n + 1)
    assert np.allclose(s @ line, line, atol=1e-12)
    assert np.allclose(s.sum(axis=1), 1, atol=1e-12)


def test_a_half_window_of_two_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        smoother(2)


def test_the_smoother_smooths():
    """On noise, the smoothed curve scatters less than the data (else the scatter estimate would be 0)."""
    noise = np.random.default_rng(0).normal(size=15)
    assert 0 < np.std(smoother(15) @ noise) < 0.9 * np.std(noise)


def _curve(trend, noise, seed=0, n=30):
    return trend(np.arange(n)) + noise * np.random.default_rng(seed).normal(size=n)


@pytest.mark.parametrize("seed", range(5))
def test_a_flat_noisy_curve_is_saturated(seed):
    assert bool(saturated(_curve(lambda t: 1.0 + 0 * t, 1e-3, seed), 30))


@pytest.mark.parametrize("seed", range(5))
def test_a_rising_curve_is_saturated(seed):
    assert bool(saturated(_curve(lambda t: 1.0 + 1e-3 * t, 1e-4, seed), 30))


@pytest.mark.parametrize("seed", range(5))
def test_a_curve_still_falling_above_its_noise_is_not_saturated(seed):
    assert not bool(saturated(_curve(lambda t: 1.0 - 1e-3 * t, 1e-5, seed), 30))


def test_a_fall_hidden_in_noise_counts_as_saturated():
    """The halves' means differ by 15·1e-5 while the scatter is about 1e-2: the noise wins."""
    assert bool(saturated(_curve(lambda t: 1.0 - 1e-5 * t, 1e-2, 3), 30))


def test_saturation_reads_only_the_last_window():
    falling = _curve(lambda t: 1.0 - 1e-3 * t, 1e-5, 0)
    flat = _curve(lambda t: 0.5 + 0 * t, 1e-3, 1)
    assert bool(saturated(np.concatenate([falling, flat]), 30))
    assert not bool(saturated(np.concatenate([flat, falling]), 30))


# ---- TAMADE and random-gradient pruning ---------------------------------------------------------------------
def test_tamade_finds_the_largest_threshold_the_loss_tolerates():
    """loss = 1 + Σ of the squares of the pruned entries; with tolerance 1.5 the entry 1 may go (loss 2), the
    entry 2 may not (loss 6): every threshold up to 2 passes, anything above fails."""
    theta0 = jnp.array([1.0, -2.0, 3.0, 4.0])

    def loss(theta):
        return 1 + jnp.sum(jnp.where(theta == 0, theta0**2, 0.0))

    found, steps = tamade(loss, theta0, 1.5, 1e-7)
    assert 2 - 1e-7 <= float(found) <= 2
    assert int(steps) == int(np.ceil(np.log2(8 / 1e-7)))  # the interval [0, 2·max|θ|] halved to 1e-7
    np.testing.assert_array_equal(magnitude_pruned(theta0, found), [0.0, -2.0, 3.0, 4.0])


def test_tamade_keeps_everything_when_nothing_can_go():
    theta0 = jnp.array([1.0, 2.0])
    found, _ = tamade(lambda t: 1 + jnp.sum((t - theta0) ** 2), theta0, 1e-3, 1e-7)
    assert 1 - 1e-7 <= float(found) <= 1  # up to the smallest |θ|, a threshold prunes nothing
    np.testing.assert_array_equal(magnitude_pruned(theta0, found), theta0)


def test_random_gradient_pruning_removes_exactly_the_entries_of_dead_units():
    """2,3,1: unit 0 has no outgoing weight (its incoming weights and bias cannot matter), unit 1 has no incoming
    weight and no bias (it outputs tanh(0) = 0: its outgoing weight cannot matter); unit 2 is alive."""
    dims = (2, 3, 1)
    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = rng.normal(size=(3, 2)), rng.normal(size=3), rng.normal(size=(1, 3)), rng.normal(size=1)
    w2[0, 0] = 0.0
    w1[1], b1[1] = 0.0, 0.0
    theta = jnp.asarray(np.concatenate([w1.ravel(), b1, w2.ravel(), b2]))
    pruned = np.asarray(random_gradient_pruned(lambda t, x, y: loss_and_grad(t, dims, x, y), theta,
                                               jax.random.key(0), 50, dims))
    dead = np.zeros(len(theta), bool)
    dead[[0, 1, 6]] = True  # W1[0, :], b1[0]: the unit without an output
    dead[[2, 3, 7]] = True  # W1[1, :], b1[1]: zero already
    dead[[10]] = True  # W2[0, 1]: out of the unit without an input
    np.testing.assert_array_equal(pruned == 0, dead | (np.asarray(theta) == 0))
    np.testing.assert_array_equal(pruned[~dead], np.asarray(theta)[~dead])


# ---- the batched phases ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """The kind's example: 2 alphas x 2 repetitions."""
    with jax.enable_x64(True):
        config = example("procedure")
        return config, kind("procedure").compute(config)


def test_a_run_does_not_depend_on_the_runs_beside_it(small):
    """Runs stop at different epochs and wait frozen: a run alone gives the numbers it gives in the batch."""
    config, result = small
    alone = kind("procedure").compute(config.replace(alphas=config.alphas[1:]))
    rows = result.metrics["alpha"] == config.alphas[1]
    for name, values in alone.metrics.items():
        if name not in ("run",):
            np.testing.assert_array_equal(values, result.metrics[name][rows], err_msg=name)
    np.testing.assert_array_equal(alone.params["pruned"], result.params["pruned"][rows])


def test_the_procedure_prunes_and_reports_consistently(small):
    config, result = small
    m, pruned = result.metrics, result.params["pruned"]
    np.testing.assert_array_equal(m["nonzero"], (pruned != 0).sum(axis=1))
    assert np.all(m["nonzero"] <= m["nonzero_trained"])
    assert np.all(m["authors_test_loss"] <= m["test_loss"] + 1e-15) or np.all(m["turning_points"] == 0)
    assert np.all((m["epochs_regularised"] >= config.min_epochs) & (m["epochs_regularised"] <= config.epochs))
    assert np.all((m["epochs_finetune"] >= config.finetune_min_epochs)
                  & (m["epochs_finetune"] <= config.finetune_epochs))
    assert np.all(m["l2_aligned_lower"] <= m["l2_aligned"] * (1 + 1e-12))


def test_per_sample_alpha_is_alpha_over_the_dataset_size():
    """The same numbers from α per sample and from α / N in total."""
    config = example("procedure").replace(alphas=(64.0,), runs=1)
    per_sample = kind("procedure").compute(config)
    total = kind("procedure").compute(config.replace(alphas=(64.0 / config.dataset_size,), alpha_scale="total"))
    np.testing.assert_array_equal(per_sample.params["pruned"], total.params["pruned"])


@pytest.mark.parametrize("fields, message", [
    ({"alphas": (0.0, -1.0)}, "--alphas"),
    ({"validation_set_size": 0}, "--validation-set-size"),
    ({"tamade_tolerance": 0.0}, "--tamade-tolerance"),
    ({"train": "pmmp", "optimizer": "gd"}, "--optimizer adam"),
    ({"min_epochs": 61}, "--min-epochs"),
    ({"initial_permut": 0.1}, "--initial-permut"),
])
def test_bad_procedure_configs_are_refused(fields, message):
    from l2rebound.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        example("procedure").replace(**fields)


def test_a_rule_with_state_runs_only_where_a_kind_trains_it():
    from l2rebound.config import ConfigError

    with pytest.raises(ConfigError, match="per-parameter state"):
        Config(train="pmmp", optimizer="adam")


def test_pmmp_runs_the_procedure_and_settles_its_probabilities():
    config = example("procedure").replace(train="pmmp", alphas=(0.5,), runs=1, epochs=200, min_epochs=100)
    result = kind("procedure").compute(config)
    assert result.metrics["diverged"][0] == 0
    assert np.isfinite(result.metrics["test_loss"][0])


def test_an_interrupted_procedure_says_what_it_kept(tmp_path):
    from l2rebound import store
    from l2rebound.experiments import kept_work

    config = example("procedure")
    checkpoint = store.Checkpoint(tmp_path, config)
    seen = []

    def interrupt(n):
        seen.append(n)
        if len(seen) == 2:  # the regularised phase has finished: the fine-tuning's first report
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kind("procedure").compute(config, on_progress=interrupt, checkpoint=checkpoint)
    assert "regularised phase: trainings 1–4 finished" in kept_work(checkpoint)


def test_a_diverging_procedure_is_reported_not_raised():
    config = example("procedure").replace(optimizer="gd", learning_rate=1e6, alphas=(0.0,), runs=1)
    result = kind("procedure").compute(config)
    assert result.metrics["diverged"].tolist() == [1]
    assert "diverged" in result.warnings()[0] and "--learning-rate" in result.warnings()[0]
    assert np.isnan(result.metrics["test_loss"][0]) and result.metrics["nonzero"][0] == -1


SMALL = ("--teacher-dims", "2,2,1", "--student-dims", "2,4,1", "--alphas", "0,0.5", "--runs", "2",
         "--dataset-size", "32", "--validation-set-size", "32", "--test-set-size", "32", "--epochs", "60",
         "--min-epochs", "40", "--finetune-epochs", "40", "--learning-rate", "1e-2")


def test_reproduce_compression_runs_each_procedure_and_states_the_claims(tmp_path):
    from conftest import run_cli

    code, out, err = run_cli("reproduce", "compression", "--procedures", "drr,l1", *SMALL, "--out", tmp_path,
                             "--no-progress")
    assert code == 0, err
    assert len(list(tmp_path.glob("procedure-*"))) == 2
    assert len(list(tmp_path.glob("*_compression.png"))) == 1
    assert "drr, authors' test loss: best alpha 0.5" in out and "l1, recovery:" in out


@pytest.mark.parametrize("argv, message", [
    (("--alphas", "0,-1"), "--alphas"),
    (("--validation-set-size", "0"), "--validation-set-size"),
    (("--tamade-tolerance", "0"), "--tamade-tolerance"),
    (("--procedures", "drr,nonsense"), "--procedures"),
    (("--procedures", "pmmp", "--optimizer", "gd"), "--optimizer adam"),
])
def test_bad_input_to_the_study_fails_in_one_line_and_writes_nothing(argv, message, tmp_path):
    from conftest import run_cli

    code, out, err = run_cli("reproduce", "compression", *SMALL, *argv, "--out", tmp_path)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())
