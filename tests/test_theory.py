"""Linear-response theory near the teacher: the matrices against NumPy oracles, the closed form against
the recursion it solves, and the predictions against the real engine (Experiments A and B)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2rebound import reference, theory
from l2rebound.config import Config
from l2rebound.data import Split
from l2rebound.experiments import setup_runs
from l2rebound.kinds.epoch.engine import run as run_epoch_experiment
from l2rebound.kinds.noise.engine import run as run_noise_experiment
from l2rebound.nets import init_glorot

pytestmark = pytest.mark.usefixtures("x64")  # these tests call the engine's internals

DIMS = (2, 4, 3, 2)  # two outputs: the normalisation is by N·dL and J's rows interleave samples and outputs
N = 60


@pytest.fixture(scope="module")
def net():
    """A generic teacher θ (P,), inputs x (N, d0), unit noise z (N, dL) and clean outputs (N, dL)."""
    rng = np.random.default_rng(0)
    theta = np.asarray(init_glorot(jax.random.key(1), DIMS, "uniform", jnp.float64))
    x = rng.uniform(-1, 1, (N, DIMS[0]))
    return theta, x, rng.standard_normal((N, DIMS[-1])), reference.forward(theta, DIMS, x)


def reference_jacobian(theta, x):
    """J (N·dL, P) by the NumPy backprop: a one-sample loss whose residual is (dL/2)·e_k has gradient ∂f_k."""
    rows = []
    for sample, out in zip(x, reference.forward(theta, DIMS, x)):
        for k in range(DIMS[-1]):
            label = out - np.eye(DIMS[-1])[k] * DIMS[-1] / 2
            rows.append(reference.loss_and_grad(theta, DIMS, sample[None], label[None])[1])
    return np.array(rows)


def test_jacobian_and_gauss_newton_match_numpy_backprop(net):
    theta, x, _, _ = net
    jac = reference_jacobian(theta, x)
    np.testing.assert_allclose(theory.jacobian(theta, DIMS, x), jac, rtol=0, atol=1e-14 * np.abs(jac).max())
    gn = np.asarray(theory.gauss_newton(theta, DIMS, x))
    dense = 2 / jac.shape[0] * jac.T @ jac
    np.testing.assert_allclose(gn, dense, rtol=0, atol=1e-13 * np.abs(dense).max())
    values = theory.spectrum(gn).values
    np.testing.assert_allclose(values, np.linalg.eigvalsh(dense), rtol=0, atol=1e-12 * values[-1])
    assert values[0] >= -1e-14 * values[-1]
    assert values[-1] > 0 and np.all(np.diff(values) >= 0)


def test_hessian_is_symmetric_gauss_newton_on_clean_labels_and_matches_finite_differences(net):
    theta, x, z, clean = net
    scale = np.abs(theory.gauss_newton(theta, DIMS, x)).max()
    exact = np.asarray(theory.hessian(theta, DIMS, x, clean))
    np.testing.assert_allclose(exact, theory.gauss_newton(theta, DIMS, x), rtol=0, atol=1e-13 * scale)

    # away from the teacher, with large residuals, the second-order term of the outputs is present
    moved = theta + 0.3 * np.random.default_rng(1).standard_normal(theta.size)
    y = clean + 0.5 * z
    exact = np.asarray(theory.hessian(moved, DIMS, x, y))
    np.testing.assert_allclose(exact, exact.T, rtol=0, atol=1e-14 * scale)
    assert np.abs(exact - theory.gauss_newton(moved, DIMS, x)).max() > 1e-2 * scale
    h = 1e-5
    columns = [(reference.loss_and_grad(moved + h * e, DIMS, x, y)[1]
                - reference.loss_and_grad(moved - h * e, DIMS, x, y)[1])
               / (2 * h) for e in np.eye(theta.size)]
    np.testing.assert_allclose(exact, np.array(columns).T, rtol=0, atol=1e-8 * scale)


def test_noise_gradient_is_minus_the_loss_gradient_at_the_teacher(net):
    theta, x, z, clean = net
    g = np.asarray(theory.noise_gradient(theta, DIMS, x, z, 0.3))
    np.testing.assert_allclose(g, -reference.loss_and_grad(theta, DIMS, x, clean + 0.3 * z)[1], rtol=0,
                               atol=1e-14 * np.abs(g).max())


def synthetic_spectrum(rng, values):
    """A random orthonormal basis with the given eigenvalues (P,)."""
    vectors, _ = np.linalg.qr(rng.standard_normal((len(values), len(values))))
    return theory.Spectrum(np.asarray(values, dtype=float), vectors)


def test_closed_form_solves_the_gd_recursion_in_every_regime():
    rng = np.random.default_rng(2)
    # an exact null direction, a slow, a monotone, a critically damped (ηλ = 1) and an oscillating one (ηλ = 1.5)
    spec = synthetic_spectrum(rng, [0.0, 1e-3, 0.5, 2.0, 3.0])
    matrix = spec.vectors @ np.diag(spec.values) @ spec.vectors.T
    delta0 = rng.standard_normal(5)
    g = matrix @ rng.standard_normal(5)  # in the range of H, as the noise pull is
    eta, epochs = 0.5, 40
    delta, path = delta0, [delta0]
    for _ in range(epochs):
        delta = delta - eta * matrix @ delta + eta * g
        path.append(delta)
    predicted = spec.vectors @ theory.components(spec, delta0, g, eta, np.arange(epochs + 1)).T
    np.testing.assert_allclose(predicted.T, np.array(path), rtol=0, atol=1e-12)
    np.testing.assert_allclose(theory.linear_response(spec, delta0, g, eta, epochs), np.linalg.norm(path, axis=1),
                               rtol=1e-13)
    np.testing.assert_allclose(theory.time_constants(spec.values, eta), [np.inf, 2000, 4, 1, 2 / 3], rtol=1e-15)
    assert theory.unsettled(spec.values, eta, epochs) == 2


def test_null_directions_keep_the_start_and_drop_the_pull():
    spec = synthetic_spectrum(np.random.default_rng(3), [-1e-17, 1e-16, 1e-3, 1.0])
    assert theory.null_directions(spec.values).tolist() == [True, True, False, False]
    assert theory.null_directions(spec.values, rtol=1e-2).tolist() == [True, True, True, False]
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0, 8.0])
    c = theory.components(spec, spec.vectors @ a, spec.vectors @ b, 0.1, [0, 10**6])
    np.testing.assert_allclose(c[:, :2], [[1, 2], [1, 2]], rtol=1e-12)
    np.testing.assert_allclose(c[1, 2:], [3 * 0.9999**10**6 + (1 - 0.9999**10**6) * 7e3, 8.0], rtol=1e-9)
    # the slowest settled direction is accurate where 1 − (1 − ηλ)^t cancels: ηλ = 1e-14, t = 3
    tiny = theory.Spectrum(np.array([1e-14, 1.0]), np.eye(2))
    np.testing.assert_allclose(theory.components(tiny, [0.0, 0.0], [1.0, 0.0], 1.0, [3])[0, 0], 3 - 3e-14, rtol=1e-15)


def test_flat_fraction():
    spec = synthetic_spectrum(np.random.default_rng(4), [0.0, 1.0, 2.0, 3.0])
    deltas = np.stack([spec.vectors[:, 1], 3 * spec.vectors[:, 0] + 4 * spec.vectors[:, 3], np.zeros(4)])
    np.testing.assert_allclose(theory.flat_fraction(spec.vectors, deltas[:2], 1), [0, 9 / 25], atol=1e-15)
    both = theory.flat_fraction(spec.vectors, deltas, [0, 2, 4])
    assert both.shape == (3, 3)
    np.testing.assert_allclose(both[:2], [[0, 1, 1], [0, 9 / 25, 1]], atol=1e-15)
    assert np.isnan(both[2]).all()


# Experiments A and B on the real engine, plain GD without projection (ηλ_max ≈ 0.9 here).
ENGINE = {"teacher_dims": (2, 5, 5, 1), "bias_init": "uniform", "projection": "off", "dataset_size": 300,
          "test_set_size": 50, "epochs": 200, "runs": 1, "learning_rate": 0.1}


def engine_prediction(config):
    """The run's measured ℓ₂ (E + 1,) and ``predict_run`` on its own teacher and data (run 1: seed + 1)."""
    result = run_epoch_experiment(config)
    teacher, problem, student, _ = setup_runs(config, [config.seed + 1], [config.seed + 1])
    np.testing.assert_array_equal(teacher, result.teacher)
    np.testing.assert_array_equal(student, result.student_init)
    train = Split(*(a[0] for a in problem.train))
    predicted = theory.predict_run(problem.teacher[0], config.student_dims, train, student[0], config.noise_sigma,
                                   config.learning_rate, config.epochs)
    return result.metrics["l2"][0], predicted


@pytest.mark.slow
def test_experiment_b_follows_the_linear_response():
    measured, predicted = engine_prediction(Config(**ENGINE, noise_sigma=1e-6))
    assert measured[0] == predicted["l2"][0] == 0
    assert measured[-1] > 5 * measured[1]  # far from the first step's value
    np.testing.assert_allclose(predicted["l2"][1:], measured[1:], rtol=1e-4)  # observed: 1e-7


def test_experiment_a_decays_monotonically_and_tracks_the_engine_to_first_order():
    measured, predicted = engine_prediction(Config(**ENGINE, noise_sigma=0.0, initial_permut=1e-4))
    l2 = predicted["l2"]
    assert ENGINE["learning_rate"] * predicted["gn_eigenvalues"][-1] < 2
    assert np.all(np.diff(l2) <= 0) and l2[-1] < 0.95 * l2[0]
    np.testing.assert_allclose(l2[0], measured[0], rtol=1e-13)  # the same ‖δ_0‖ in the eigenbasis
    # the drop ℓ₂(0) − ℓ₂(t), about 10% here, to the accuracy of a first-order theory (error ∝ p; observed 5e-4)
    np.testing.assert_allclose(l2[0] - l2[1:], measured[0] - measured[1:], rtol=3e-3)


def test_noise_prediction_is_linear_in_sigma_and_matches_the_response(net):
    theta, x, z, clean = net
    train = Split(x, clean, z)
    spec = theory.spectrum(theory.gauss_newton(theta, DIMS, x))
    unit = np.asarray(theory.noise_gradient(theta, DIMS, x, z, 1.0))
    levels = np.array([1e-5, 1e-3, 0.1])
    eta, epochs = 0.05, 30
    exact = theory.predict_noise(theta, DIMS, train, theta, levels, eta, epochs)["l2"]
    np.testing.assert_allclose(exact / levels, exact[0] / levels[0], rtol=1e-13)
    zero = np.zeros_like(theta)
    curves = [theory.linear_response(spec, zero, s * unit, eta, epochs) for s in levels]
    np.testing.assert_allclose(exact, [c[-1] for c in curves], rtol=1e-12)
    assert exact[0] > 0
    # from a perturbed start the final distance is no longer proportional to σ
    start = theta + 1e-3 * np.random.default_rng(5).standard_normal(theta.size)
    perturbed = theory.predict_noise(theta, DIMS, train, start, levels, eta, epochs)["l2"]
    curves = [theory.linear_response(spec, start - theta, s * unit, eta, epochs) for s in levels]
    np.testing.assert_allclose(perturbed, [c[-1] for c in curves], rtol=1e-12)
    assert perturbed[0] / levels[0] > 10 * perturbed[-1] / levels[-1]


def test_analyze_an_epoch_result_run_by_run():
    result = run_epoch_experiment(Config(**{**ENGINE, "runs": 2, "epochs": 60}, noise_sigma=1e-6, align_every=20))
    analysis = theory.analyze(result)
    P = result.kept_theta.shape[-1]
    assert analysis["predicted_l2"].shape == (2, 61) and analysis["gn_eigenvalues"].shape == (2, P)
    np.testing.assert_allclose(analysis["predicted_l2"][:, 1:], result.metrics["l2"][:, 1:], rtol=1e-2)
    # at the teacher the Hessian differs from Gauss–Newton only by a term of order σ
    np.testing.assert_allclose(analysis["hessian_eigenvalues"], analysis["gn_eigenvalues"][0], rtol=0, atol=1e-6)
    assert ((analysis["null"] <= analysis["unsettled"]) & (analysis["unsettled"] < P)).all()
    fractions = analysis["flat_fraction"]  # (R, K, 3); NaN at epoch 0 (δ = 0)
    assert fractions.shape == (2, 4, 3) and np.isnan(fractions[:, 0]).all()
    later = fractions[:, 1:]
    assert ((later >= 0) & (later <= 1 + 1e-12)).all() and (np.diff(later, axis=2) >= -1e-12).all()


def test_analyze_a_noise_result_matches_each_level():
    config = Config(experiment="noise", **{k: v for k, v in ENGINE.items() if k != "epochs"}, epochs=60,
                    noise_levels=(1e-7, 1e-6, 1e-5))
    result = run_noise_experiment(config)
    analysis = theory.analyze(result)
    assert analysis["predicted_l2"].shape == (3, 1)
    np.testing.assert_allclose(analysis["predicted_l2"], result.metrics["l2"], rtol=1e-2)


def test_analyze_refuses_a_start_it_cannot_reproduce():
    result = run_epoch_experiment(Config(**{**ENGINE, "epochs": 5}))
    with pytest.raises(ValueError, match="cannot be drawn again"):
        theory.analyze(dataclasses.replace(result, student_init=result.student_init + 1e-9))


def test_analyze_without_kept_students_still_predicts_and_plots(tmp_path):
    from l2rebound.plots import theory_summary, write_theory

    result = run_epoch_experiment(Config(**{**ENGINE, "epochs": 5}, align_every=0))
    analysis = theory.analyze(result)
    assert analysis["flat_fraction"].shape == (1, 0, 3) and analysis["predicted_l2"].shape == (1, 6)
    assert len(write_theory(result, analysis, tmp_path)) == 2
    assert "unsettled after 5 epochs" in theory_summary(result, analysis)


def test_analyze_an_exact_start_trained_zero_epochs(tmp_path):
    from l2rebound.plots import theory_summary, write_theory

    result = run_epoch_experiment(Config(**{**ENGINE, "epochs": 0}))
    analysis = theory.analyze(result)
    assert (analysis["predicted_l2"] == 0).all() and analysis["predicted_l2"].shape == (1, 1)
    assert len(write_theory(result, analysis, tmp_path)) == 2
    assert "nothing to compare" in theory_summary(result, analysis)


def test_the_regularised_response_solves_its_recursion(net):
    """Against a direct NumPy iteration of δ_{t+1} = δ_t − η(Hδ_t − g + ∇R(θ_t + δ_t)), ∇R from the rule's NumPy
    oracle, with H's null directions flat and g's component there dropped (the model's convention)."""
    theta, x, z, clean = net
    teacher = theta.copy()
    teacher[::7] = 1e-6  # entries the drift pushes across 0, where DRR's gradient jumps
    gn = theory.spectrum(theory.gauss_newton(teacher, DIMS, x))
    unit = np.asarray(theory.noise_gradient(teacher, DIMS, x, z, 1.0))
    rng = np.random.default_rng(3)
    delta0, sigma, eta, epochs = 1e-2 * rng.standard_normal(teacher.size), 1e-3, 0.05, 40
    alpha, beta, rho = 1e-2, 10.0, 1e-3
    hyper = theory.Hyper(0.0, 0.0, alpha, beta, rho, 0.0)
    got = theory.regularised_response(gn, teacher, delta0, unit, [sigma], eta, epochs, hyper, "drr", DIMS)
    null = theory.null_directions(gn.values)
    h = (gn.vectors * np.where(null, 0.0, gn.values)) @ gn.vectors.T
    g = gn.vectors @ np.where(null, 0.0, gn.vectors.T @ (sigma * unit))
    delta, expected = delta0.copy(), []
    for _ in range(epochs + 1):
        expected.append(np.linalg.norm(delta))
        pull = reference.regulariser_grad(teacher + delta, DIMS, "drr", alpha, beta, rho)
        delta = delta - eta * (h @ delta - g + pull)
    np.testing.assert_allclose(got["l2"][0], expected, rtol=1e-10)
    # the parts are the final displacement's: loss-only and drift, settled and not, add up to it in squares
    loss_final = theory.components(gn, delta0, sigma * unit, eta, [epochs])[0]
    assert got["parts"].shape == (1, 4)
    np.testing.assert_allclose(np.hypot(*got["parts"][0, :2]), np.linalg.norm(loss_final), rtol=1e-12)
    assert got["parts"][0, 2:].max() > 1e-3  # the drift is not nothing


def test_without_a_regulariser_the_prediction_is_the_loss_alone():
    result = run_epoch_experiment(Config(**{**ENGINE, "runs": 2, "epochs": 40}, noise_sigma=1e-6, initial_permut=1e-3))
    analysis = theory.analyze(result)
    np.testing.assert_allclose(analysis["predicted_l2"], analysis["predicted_l2_loss_only"], rtol=1e-10, atol=0)
    assert (analysis["parts"][:, 2:] == 0).all()  # vanilla: no drift at all


def test_the_regulariser_moves_the_prediction_onto_the_engine():
    """DRR on a perturbed start: the loss alone predicts an ℓ₂ that hardly moves, the engine's moves, and the
    prediction with the regulariser follows the engine."""
    config = Config(**{**ENGINE, "runs": 2, "epochs": 120, "learning_rate": 0.05}, noise_sigma=0.0,
                    initial_permut=1e-2, train="drr", alpha=3e-3)
    result = run_epoch_experiment(config)
    analysis = theory.analyze(result)
    measured = result.metrics["l2"]
    with_regulariser = np.abs(analysis["predicted_l2"] / measured - 1).max()
    loss_alone = np.abs(analysis["predicted_l2_loss_only"] / measured - 1).max()
    assert loss_alone > 0.02 and with_regulariser < 0.1 * loss_alone, (with_regulariser, loss_alone)


@pytest.mark.slow
def test_analyze_of_a_sweep_puts_the_prediction_beside_every_cell(tmp_path, monkeypatch):
    import pandas as pd
    from conftest import run_cli

    base = ["--teacher-dims", "2,4,1", "--dataset-size", "64", "--test-set-size", "16", "--epochs", "40", "--runs",
            "2", "--initial-permut", "1e-2", "--noise-sigma", "0", "--train", "drr", "--align-every", "0"]
    code, _, err = run_cli("sweep", *base, "--grid", "learning-rate=3e-2,1e-1", "--grid", "alpha=3e-3,1e-2",
                           "--out", tmp_path, "--no-progress")
    assert code == 0, err
    folder = next(tmp_path.glob("sweep-*"))
    code, out, err = run_cli("analyze", folder, "--no-progress")
    assert code == 0, err
    table = pd.read_csv(folder / "theory.csv")
    assert len(table) == 4 * 2 and {"rebound_predicted", "l2_min_epoch_predicted"} <= set(table.columns)
    assert (table.rebound > 1.01).all()  # a rebound to predict in every cell
    np.testing.assert_allclose(table.rebound_predicted - 1, table.rebound - 1, rtol=0.05)
    assert (abs(table.l2_min_epoch_predicted - table.l2_min_epoch) <= 2).all()
    for stat in ("rebound", "l2_min_epoch"):
        assert (folder / f"sweep_theory_{stat}.png").is_file()
    assert len([line for line in out.splitlines() if line.strip().startswith(("0.03", "0.1"))]) == 4
    assert len(list(tmp_path.glob("epoch-*/theory.npz"))) == 4
    monkeypatch.setattr(theory, "analyze", lambda *a, **k: pytest.fail("analysed a stored cell again"))
    assert run_cli("analyze", folder, "--no-progress")[0] == 0  # every cell's analysis is reused


def test_a_shared_cache_changes_no_number():
    configs = [Config(**{**ENGINE, "runs": 2, "epochs": 20}, noise_sigma=s, initial_permut=p, seed=seed,
                      train="drr", alpha=1e-3) for s, p, seed in ((0.0, 1e-3, 42), (1e-4, 3e-3, 42), (0.0, 1e-3, 7))]
    results = [run_epoch_experiment(config) for config in configs]
    cache = {}
    for result in results:
        shared, alone = theory.analyze(result, cache=cache), theory.analyze(result)
        for name, values in alone.items():
            np.testing.assert_array_equal(shared[name], values, err_msg=name)
    # the spectra of two draws (seeds 42 and 7) of two runs each, shared by σ = 0 and 1e-4; run 1's Hessian for
    # each (draw, σ): seed 42 at σ = 0 and 1e-4, seed 7 at σ = 0
    assert len(cache) == 2 * 2 + 3


def test_a_noise_result_with_a_regulariser(tmp_path):
    from l2rebound.plots import theory_summary, write_theory

    config = Config(experiment="noise", **{k: v for k, v in ENGINE.items() if k != "epochs"}, epochs=40,
                    noise_levels=(1e-4, 1e-3, 1e-2), train="l1", alpha=1e-4)
    result = run_noise_experiment(config)
    analysis = theory.analyze(result)
    assert analysis["predicted_l2"].shape == (3, 1) and analysis["parts"].shape == (3, 1, 4)
    assert not np.allclose(analysis["predicted_l2"], analysis["predicted_l2_loss_only"], rtol=1e-3)
    assert np.abs(analysis["predicted_l2"] / result.metrics["l2"] - 1).max() < \
        np.abs(analysis["predicted_l2_loss_only"] / result.metrics["l2"] - 1).max()
    assert "regulariser's drift" in theory_summary(result, analysis)
    assert len(write_theory(result, analysis, tmp_path)) == 2


@pytest.mark.slow
def test_analyze_recomputes_an_older_analysis_and_refuses_what_it_does_not_model(tmp_path):
    from conftest import run_cli

    from l2rebound import store

    base = ["--teacher-dims", "2,4,1", "--dataset-size", "64", "--test-set-size", "16", "--epochs", "10", "--runs",
            "1", "--out", tmp_path, "--no-progress"]
    assert run_cli("epoch", *base)[0] == 0
    folder = next(tmp_path.glob("epoch-*"))
    assert run_cli("analyze", folder, "--no-progress")[0] == 0
    stored = store.load_analysis(folder)
    store.save_analysis(folder, {k: v for k, v in stored.items() if k != "version"})  # as an earlier version wrote
    code, out, _ = run_cli("analyze", folder, "--no-progress")
    assert code == 0 and "analysing" in out and "reusing" not in out
    assert theory.is_current(store.load_analysis(folder))
    assert run_cli("epoch", *base, "--projection", "margin")[0] == 0
    margin = next(p for p in tmp_path.glob("epoch-*") if store.load_config(p).projection == "margin")
    code, _, err = run_cli("analyze", margin)
    assert code == 2 and "--projection margin" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("sweep", *base, "--grid", "optimizer=gd,adam")
    assert code == 0, err
    code, _, err = run_cli("analyze", next(tmp_path.glob("sweep-*")))
    assert code == 2 and "not --optimizer adam" in err and "a cell of" in err
