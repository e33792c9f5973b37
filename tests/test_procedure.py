"""The compression procedure's parts: the saturation test, TAMADE, random-gradient pruning, and the batched
phases (frozen runs, validation selection), on small cases with known answers."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import InterruptAt, progress_around

from l2rebound import Config
from l2rebound.config import example
from l2rebound.registry import kind
from l2rebound.stopping import saturated, smoother
from l2rebound.thresholds import magnitude_pruned, random_gradient_pruned, tamade
from l2rebound.train import loss_and_grad, mse

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


def test_the_smoother_weighs_the_middle_of_a_half_by_the_epanechnikov_kernel():
    """At the middle of 15 points the local-linear fit is the kernel-weighted mean (the slope drops out by
    symmetry): weights 0.75·(1 − u²) of u = (i − 8) / 14 / h, h = 15^(-1/5)·15^(-3/35)·log(15)^(-1/16), zero for
    |u| > 1 (the 6 nearest points on each side)."""
    h = 15 ** (-1 / 5) * 15 ** (-3 / 35) * np.log(15) ** (-1 / 16)
    u = (np.arange(1, 16) - 8) / 14 / h
    weight = np.where(np.abs(u) <= 1, 0.75 * (1 - u**2), 0.0)
    assert np.count_nonzero(weight) == 13
    np.testing.assert_allclose(smoother(15)[7], weight / weight.sum(), rtol=0, atol=1e-14)


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


def test_tamade_ends_where_float32_cannot_halve_any_more():
    """Pruning 1.1 costs more than the tolerance, so every threshold up to 1.1 passes and none above it: in
    float32, whose spacing at 1.1 (1.2e-7) exceeds the resolution 1e-7, the bisection must end when its ends
    are adjacent floats (it looped forever before), at 1.1 or the float below."""
    theta0 = jnp.array([1.1, -3.0, 4.0], jnp.float32)

    def loss(theta):
        return 1 + jnp.sum(jnp.where(theta == 0, theta0**2, 0.0))

    found, _ = tamade(loss, theta0, jnp.float32(0.5), 1e-7)
    cut = np.float32(1.1)
    assert found.dtype == jnp.float32 and np.nextafter(cut, np.float32(0)) <= float(found) <= cut
    np.testing.assert_array_equal(magnitude_pruned(theta0, found), theta0)


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
    ({"min_epochs": 101}, "--min-epochs"),
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
    with pytest.raises(KeyboardInterrupt):  # at the regularised phase's closing report: it is kept by then
        kind("procedure").compute(config, on_progress=InterruptAt(2), checkpoint=checkpoint)
    assert "regularised phase: trainings 1–4 finished" in kept_work(checkpoint)


@pytest.fixture
def short_blocks(monkeypatch):
    """Blocks of 7 epochs: the example's phases take several, so that batches shrink and interrupts fall
    inside a phase."""
    from l2rebound.kinds.procedure import engine

    monkeypatch.setattr(engine, "BLOCK", 7)


def test_shrinking_batches_change_no_number_and_count_every_epoch(small, short_blocks):
    config, result = small
    counted = []
    again = kind("procedure").compute(config, on_progress=counted.append)
    assert sum(counted) == type(result).run_epochs(config) and len(counted) > 4
    for name, values in result.metrics.items():
        np.testing.assert_array_equal(again.metrics[name], values, err_msg=name)
    assert len(set(result.metrics["epochs_regularised"]) | set(result.metrics["epochs_finetune"])) > 2


@pytest.mark.parametrize("stop_at", [3, 9, 14])
def test_a_procedure_interrupted_inside_a_phase_resumes_bit_for_bit(small, short_blocks, tmp_path, stop_at):
    from l2rebound import store

    config, result = small
    checkpoint = store.Checkpoint(tmp_path, config)
    with pytest.raises(KeyboardInterrupt):
        kind("procedure").compute(config, on_progress=InterruptAt(stop_at), checkpoint=checkpoint)
    counted = []
    resumed = kind("procedure").compute(config, on_progress=counted.append, checkpoint=checkpoint)
    assert sum(counted) == type(result).run_epochs(config)
    for name, values in result.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)


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
    assert len(list(tmp_path.glob("*_compression-drr-l1.png"))) == 1
    assert "drr, authors' test loss: best alpha 0.5" in out and "l1, recovery:" in out


@pytest.mark.parametrize("argv, message", [
    (("--alphas", "0,-1"), "--alphas"),
    (("--validation-set-size", "0"), "--validation-set-size"),
    (("--tamade-tolerance", "0"), "--tamade-tolerance"),
    (("--procedures", "drr,nonsense"), "--procedures"),
    (("--procedures", "pmmp", "--optimizer", "gd"), "--optimizer adam"),
    (("--train", "l1"), "--procedures"),
])
def test_bad_input_to_the_study_fails_in_one_line_and_writes_nothing(argv, message, tmp_path):
    from conftest import run_cli

    code, out, err = run_cli("reproduce", "compression", *SMALL, *argv, "--out", tmp_path)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_pmmp_at_alpha_zero_is_plain_training():
    """At α = 0 the rule with state is idle: its state stays put and θ follows the loss alone, as with DRR at 0."""
    config = example("procedure").replace(alphas=(0.0,), runs=1)
    plain = kind("procedure").compute(config)
    pmmp = kind("procedure").compute(config.replace(train="pmmp"))
    # two programs of different shapes may round an operation differently (fusion): 1e-10, not bit for bit;
    # the multipliers moving would change θ by 0.1 and more
    np.testing.assert_allclose(pmmp.params["pruned"], plain.params["pruned"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pmmp.metrics["test_loss"], plain.metrics["test_loss"], rtol=1e-10)


def test_the_teacher_is_lux_initialised_then_stretched():
    from l2rebound.kinds.procedure.engine import teacher_of
    from l2rebound.nets import init_lux, unflatten

    for dims in [(2, 5, 8, 1), (2, 3, 1)]:
        config = example("procedure").replace(teacher_dims=dims, student_dims=dims)
        drawn = unflatten(np.asarray(init_lux(jax.random.key(config.seed), dims, jnp.float64)), dims)
        made = unflatten(np.asarray(teacher_of(config)), dims)
        np.testing.assert_array_equal(made[0][0], 2 * drawn[0][0] + 1)
        np.testing.assert_array_equal(made[1][0], 2 * drawn[1][0])
        np.testing.assert_array_equal(made[-1][1], drawn[-1][1])
        if len(dims) > 3:
            np.testing.assert_array_equal(made[2][0], drawn[2][0])
        bound = 5 / 3 * np.sqrt(3 / dims[0])
        assert np.all(np.abs(drawn[0][0]) <= bound) and np.abs(drawn[0][0]).max() > bound / 2


def test_the_procedure_runs_in_float32():
    result = kind("procedure").compute(example("procedure").replace(dtype="float32", alphas=(0.5,), runs=1))
    assert result.params["pruned"].dtype == np.float32 and np.isfinite(result.metrics["test_loss"]).all()


def test_pruning_by_search_needs_no_threshold():
    example("compress").replace(prune_method="search", prune_threshold=0.0, finetune_epochs=2)


def _saturated(values, window):
    """The saturation test as the published loop words it, in NumPy: halves of ceil(window / 2), each smoothed,
    the drop of the means against the smaller residual scatter (n - 1) plus 1e-10."""
    h = -(-window // 2)
    first, second = np.asarray(values[-2 * h:-h]), np.asarray(values[-h:])
    s = smoother(h)
    scatter = min(np.std(first - s @ first, ddof=1), np.std(second - s @ second, ddof=1))
    return first.mean() - second.mean() <= scatter + 1e-10


def test_the_phase_keeps_books_as_the_published_loop():
    """The regularised phase, one epoch at a time, against a plain-Python replay of the published loop on the
    same students: its checks, turning points, kept state, stop, returned state and the authors' number."""
    from l2rebound.kinds.procedure import engine, phases

    config = example("procedure").replace(seed=5)  # runs that stop early, late and return a kept state
    _, _, hyper, data, z = engine.prepare(config)
    runs, params = z.shape[0], z.shape[1]
    phase = engine.phase_of(config, config.train, config.min_epochs, config.epochs)
    state = jax.vmap(partial(phases.start, phase))(z, jnp.ones_like(z), jnp.full(runs, jnp.inf),
                                                   jnp.full(runs, jnp.nan), jnp.zeros(runs, bool))
    loss = jax.jit(jax.vmap(partial(mse, dims=config.student_dims)))
    books = [{"previous": np.inf, "turns": [], "authors": np.inf, "kept": None, "curve": [], "stop": None}
             for _ in range(runs)]
    for epoch in range(1, config.epochs + 1):
        state = phases.advance(phase, hyper, data, state, epoch, 1)
        val = np.asarray(loss(state.z[:, :params], x=data.val_x, y=data.val_y))
        test = np.asarray(loss(state.z[:, :params], x=data.test_x, y=data.test_y))
        for r, book in enumerate(books):
            if book["stop"] is not None:
                continue
            book["curve"].append(val[r])
            if epoch % config.check_every == 0 or epoch == config.epochs:
                if book["previous"] <= val[r]:
                    book["turns"].append(val[r])
                    book["authors"] = min(book["authors"], test[r])
                    if val[r] <= min(book["turns"]):
                        book["kept"] = np.asarray(state.z[r])
                book["previous"] = val[r]
                late = epoch >= max(config.min_epochs, config.smoothing_window + 3)
                if late and _saturated(book["curve"], config.smoothing_window) or epoch == config.epochs:
                    book["stop"], book["last"], book["final"] = epoch, val[r], np.asarray(state.z[r])
    returned, _ = jax.vmap(phases.result)(state)
    for r, book in enumerate(books):
        assert int(state.stopped_at[r]) == book["stop"] and int(state.turns[r]) == len(book["turns"])
        np.testing.assert_allclose(float(state.authors[r]), book["authors"], rtol=1e-12)
        expect = (book["kept"] if book["turns"] and book["last"] > min(book["turns"]) else book["final"])
        np.testing.assert_array_equal(returned[r], expect)
    assert {b["stop"] for b in books} != {config.epochs}  # some runs stopped on saturation
    assert any(b["turns"] and b["last"] > min(b["turns"]) for b in books)  # one returned a kept state


def test_the_study_asks_room_for_all_its_results_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from conftest import run_cli

    from l2rebound import store

    one = store.stored_size(example("procedure"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 2 * one, 2 * one))
    code, _, err = run_cli("reproduce", "compression", *SMALL, "--out", tmp_path)
    assert code == 2 and "these 3 results need" in err and not any(tmp_path.iterdir()), err


def test_the_procedures_progress_ends_after_its_alignment(monkeypatch):
    """The certified alignment of the pruned students runs before the last unit of progress: a bar does not
    show 100 % while they are aligned, and every unit is counted once."""
    from l2rebound.kinds.procedure import engine

    config = example("procedure")
    with jax.enable_x64(True):
        events, units = progress_around(monkeypatch, engine, "aligned_students",
                                        lambda progress: engine.run(config, on_progress=progress))
    assert "align" in events and events[-1] == "progress" and events.index("align") == len(events) - 2
    assert sum(units) == kind("procedure").result_type().run_epochs(config)
