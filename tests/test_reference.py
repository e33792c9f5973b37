"""Tests of the NumPy oracle (l2rebound.reference) itself: backprop against finite differences,
regulariser gradients against the penalty, layer factors, optimiser properties, metrics."""

import numpy as np
import pytest

from l2rebound import reference as ref

DEFAULT_DIMS = (2, 25, 25, 1)


def init_theta(dims, rng):
    """Glorot-uniform weights U(+-sqrt(6/(fan_in+fan_out))), biases U(-1, 1), flattened."""
    layers = []
    for din, dout in zip(dims[:-1], dims[1:]):
        lim = np.sqrt(6.0 / (din + dout))
        layers.append((rng.uniform(-lim, lim, (dout, din)), rng.uniform(-1.0, 1.0, dout)))
    return ref.flatten(layers)


def central_fd(fun, theta, h=1e-6):
    """Central finite-difference gradient of scalar ``fun`` at ``theta`` (P,)."""
    g = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (fun(theta + e) - fun(theta - e)) / (2 * h)
    return g


def assert_grad_close(g, fd, rtol=1e-6):
    assert g.shape == fd.shape
    assert np.linalg.norm(g - fd) <= rtol * np.linalg.norm(fd)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=rtol * np.abs(fd).max())


@pytest.mark.parametrize("dims", [(2, 6, 1), (3, 4, 5, 2), (2, 5, 4, 3, 1), DEFAULT_DIMS])
def test_loss_grad_matches_finite_differences(dims):
    rng = np.random.default_rng(sum(dims))
    theta = init_theta(dims, rng)
    x = rng.normal(size=(7, dims[0]))
    y = rng.normal(size=(7, dims[-1]))
    loss, g = ref.loss_and_grad(theta, dims, x, y)
    assert loss == pytest.approx(np.mean((ref.forward(theta, dims, x) - y) ** 2), rel=1e-14)
    assert_grad_close(g, central_fd(lambda t: ref.loss_and_grad(t, dims, x, y)[0], theta))


def test_forward_matches_explicit_formula():
    dims = (3, 4, 5, 2)
    rng = np.random.default_rng(1)
    theta = init_theta(dims, rng)
    x = rng.normal(size=(6, 3))
    (W1, b1), (W2, b2), (W3, b3) = ref.unflatten(theta, dims)
    expected = np.tanh(np.tanh(x @ W1.T + b1) @ W2.T + b2) @ W3.T + b3
    out = ref.forward(theta, dims, x)
    assert out.shape == (6, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def _theta_away_from_zero(P, rng):
    return rng.choice([-1.0, 1.0], P) * rng.uniform(1e-2, 1.5, P)


@pytest.mark.parametrize("dims", [(2, 6, 1), (3, 4, 5, 2)])
@pytest.mark.parametrize("rule,alpha,beta,rho", [("drr", 0.3, 5.0, 0.07), ("drr", 1e-2, 50.0, 1e-3),
                                                 ("l1", 0.2, 0.0, 0.0)])
def test_regulariser_grad_matches_penalty(dims, rule, alpha, beta, rho):
    rng = np.random.default_rng(7)
    P = sum(o * i + o for i, o in zip(dims[:-1], dims[1:]))
    theta = _theta_away_from_zero(P, rng)
    assert np.all(np.abs(theta) > 1e-3)
    g = ref.regulariser_grad(theta, dims, rule, alpha, beta, rho)
    assert_grad_close(g, central_fd(lambda t: ref.penalty(t, dims, rule, alpha, beta, rho), theta))


def test_drr_penalty_explicit_per_layer():
    dims = (2, 3, 1)  # n_1 = 9, n_2 = 4, P = 13, L = 2
    rng = np.random.default_rng(3)
    theta = _theta_away_from_zero(13, rng)
    alpha, beta, rho = 0.5, 3.0, 0.2
    expected = 0.0
    for sl, n in ((slice(0, 9), 9), (slice(9, 13), 4)):
        fac = (13 / 2) / n
        t = theta[sl]
        expected += alpha * fac * np.sum(1 - np.exp(-beta * np.abs(t))) + rho * fac * np.sum(t ** 2)
    assert ref.penalty(theta, dims, "drr", alpha, beta, rho) == pytest.approx(expected, rel=1e-13)


def test_regulariser_at_zero_and_vanilla():
    dims = (3, 4, 5, 2)
    P = ref.layer_factors(dims).size
    zero = np.zeros(P)
    np.testing.assert_array_equal(ref.regulariser_grad(zero, dims, "l1", 0.7, 0.0, 0.0), 0.0)
    np.testing.assert_array_equal(ref.regulariser_grad(zero, dims, "drr", 0.7, 4.0, 0.1), 0.0)
    theta = _theta_away_from_zero(P, np.random.default_rng(0))
    np.testing.assert_array_equal(ref.regulariser_grad(theta, dims, "vanilla", 0.7, 4.0, 0.1), 0.0)
    assert ref.penalty(theta, dims, "vanilla", 0.7, 4.0, 0.1) == 0.0
    np.testing.assert_array_equal(ref.regulariser_grad(theta, dims, "l1", 0.7, 0.0, 0.0), 0.7 * np.sign(theta))
    with pytest.raises(ValueError):
        ref.regulariser_grad(theta, dims, "l2", 0.7, 0.0, 0.0)


def test_layer_factors_default_dims():
    fac = ref.layer_factors(DEFAULT_DIMS)
    assert fac.shape == (751,)
    np.testing.assert_array_equal(np.round(np.unique(fac[[0, 75, 725]]), 3), [0.385, 3.338, 9.628])
    np.testing.assert_array_equal(fac[:75], 751 / 3 / 75)      # W1 (25x2) + b1 (25)
    np.testing.assert_array_equal(fac[75:725], 751 / 3 / 650)  # W2 (25x25) + b2 (25)
    np.testing.assert_array_equal(fac[725:], 751 / 3 / 26)     # W3 (1x25) + b3 (1)
    # Each layer's factors sum to P / L.
    assert [fac[s].sum() for s in (slice(0, 75), slice(75, 725), slice(725, 751))] == pytest.approx([751 / 3] * 3)


def test_flatten_unflatten_round_trip():
    rng = np.random.default_rng(11)
    theta = init_theta(DEFAULT_DIMS, rng)
    assert theta.shape == (751,)
    layers = ref.unflatten(theta, DEFAULT_DIMS)
    assert [(W.shape, b.shape) for W, b in layers] == [((25, 2), (25,)), ((25, 25), (25,)), ((1, 25), (1,))]
    np.testing.assert_array_equal(layers[0][0].ravel(), theta[:50])   # W1 row-major first,
    np.testing.assert_array_equal(layers[0][1], theta[50:75])         # then b1
    np.testing.assert_array_equal(ref.flatten(layers), theta)
    with pytest.raises(ValueError):
        ref.unflatten(theta[:-1], DEFAULT_DIMS)


def _data(dims, teacher, rng, n_train=20, n_test=30, noise=0.1):
    x_tr, x_te = rng.uniform(-1, 1, (n_train, dims[0])), rng.uniform(-1, 1, (n_test, dims[0]))
    y_tr = ref.forward(teacher, dims, x_tr) + noise * rng.normal(size=(n_train, dims[-1]))
    y_te_clean = ref.forward(teacher, dims, x_te)
    y_te = y_te_clean + noise * rng.normal(size=y_te_clean.shape)
    return x_tr, y_tr, x_te, y_te, y_te_clean


def test_teacher_has_zero_loss_and_zero_distance():
    rng = np.random.default_rng(5)
    teacher = init_theta(DEFAULT_DIMS, rng)
    x_tr, y_tr, x_te, y_te, y_te_clean = _data(DEFAULT_DIMS, teacher, rng)
    loss, g = ref.loss_and_grad(teacher, DEFAULT_DIMS, x_te, y_te_clean)
    assert loss == 0.0
    np.testing.assert_array_equal(g, 0.0)
    m = ref.metrics(teacher, teacher, DEFAULT_DIMS, x_tr, y_tr, x_te, y_te, y_te_clean)
    assert set(m) == {"l2", "train_loss", "test_loss", "clean_test_loss"}
    assert m["l2"] == 0.0 and m["clean_test_loss"] == 0.0
    assert m["train_loss"] > 0 and m["test_loss"] > 0
    student = teacher + 0.01
    assert ref.metrics(student, teacher, DEFAULT_DIMS, x_tr, y_tr, x_te, y_te, y_te_clean)["l2"] == \
        pytest.approx(0.01 * np.sqrt(751), rel=1e-12)


def test_adam_first_step_moves_each_parameter_by_lr():
    rng = np.random.default_rng(2)
    dims, lr = (3, 4, 5, 2), 1e-3
    theta = init_theta(dims, rng)
    _, g = ref.loss_and_grad(theta, dims, rng.normal(size=(9, 3)), rng.normal(size=(9, 2)))
    g[:3] = 0.0                                            # these must not move
    state = ref.init_opt_state("adam", theta.size)
    new, state2 = ref.apply_update(theta, g, state, "adam", lr)
    step = new - theta
    np.testing.assert_array_equal(step[:3], 0.0)
    big = np.abs(g) > 1e-4                                 # |g| >> eps: step = lr * |g| / (|g| + eps)
    assert big.sum() > 0.8 * g.size
    np.testing.assert_allclose(np.abs(step[big]), lr, rtol=1e-4)
    np.testing.assert_array_equal(np.sign(step), -np.sign(g))
    assert state2["t"] == 1 and state["t"] == 0 and not state["m"].any()   # input state untouched


def test_optimisers_match_closed_forms():
    rng = np.random.default_rng(4)
    theta, g1, g2 = rng.normal(size=(3, 10))
    new, _ = ref.apply_update(theta, g1, ref.init_opt_state("gd", 10), "gd", 0.1)
    np.testing.assert_allclose(new, theta - 0.1 * g1, rtol=1e-15)
    s = ref.init_opt_state("adam", 10)
    t1, s = ref.apply_update(theta, g1, s, "adam", 0.01)
    t2, s = ref.apply_update(t1, g2, s, "adam", 0.01)
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2
    np.testing.assert_allclose(t2, t1 - 0.01 * (m / (1 - 0.9 ** 2)) / (np.sqrt(v / (1 - 0.999 ** 2)) + 1e-8),
                               rtol=1e-14)


def test_train_records_epochs_plus_one_and_matches_steps():
    rng = np.random.default_rng(8)
    dims = (2, 6, 6, 1)
    teacher, theta0 = init_theta(dims, rng), init_theta(dims, rng)
    data = _data(dims, teacher, rng)
    kw = dict(rule="drr", alpha=1e-3, beta=10.0, rho=1e-4, optimizer="adam", lr=1e-2)
    hist = ref.train(theta0, teacher, dims, *data, epochs=25, **kw)
    assert set(hist) == {"l2", "train_loss", "test_loss", "clean_test_loss"}
    assert all(v.shape == (26,) for v in hist.values())
    assert hist["l2"][0] == pytest.approx(np.linalg.norm(theta0 - teacher), rel=1e-14)
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    theta, state = theta0, ref.init_opt_state("adam", theta0.size)
    for e in range(25):
        theta, state, loss = ref.train_step(theta, state, dims, data[0], data[1], **kw)
        assert loss == hist["train_loss"][e]
    assert ref.metrics(theta, teacher, dims, *data) == {k: v[-1] for k, v in hist.items()}


def test_adam_matches_optax(x64):
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(9)
    theta = rng.normal(size=12)
    opt = optax.adam(3e-2)
    ostate, otheta = opt.init(theta), theta.copy()
    state = ref.init_opt_state("adam", 12)
    for _ in range(5):
        g = rng.normal(size=12) * rng.choice([1e-9, 1e-3, 1.0], 12)
        theta, state = ref.apply_update(theta, g, state, "adam", 3e-2)
        upd, ostate = opt.update(g, ostate, otheta)
        otheta = np.asarray(optax.apply_updates(otheta, upd))
    np.testing.assert_allclose(theta, otheta, rtol=1e-12, atol=1e-15)


def test_float32_input_stays_float32():
    dims = (3, 4, 5, 2)
    rng = np.random.default_rng(6)
    theta = init_theta(dims, rng).astype(np.float32)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    assert ref.forward(theta, dims, x).dtype == np.float32
    assert ref.loss_and_grad(theta, dims, x, y)[1].dtype == np.float32
    state = ref.init_opt_state("adam", theta.size, np.float32)
    new, _, _ = ref.train_step(theta, state, dims, x, y, rule="drr", alpha=0.1, beta=2.0, rho=0.01,
                               optimizer="adam", lr=1e-3)
    assert new.dtype == np.float32
