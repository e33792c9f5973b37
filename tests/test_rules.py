"""One battery for every registered training rule and optimiser (``rules.all_rules()``,
``rules.all_optimizers()``: the built-in ones and those of installed packages, the example plugin's included),
generated from the registries: a new member is tested here with no new test code, against finite
differences, autodiff and its NumPy oracle (``reference``, or the one the member carries), alone and in
training. A rule with state beside θ (``Rule.blocks > 1``) is tested on its whole z, alone; the epoch engine
trains θ alone, so its training is tested with the engine that trains that state."""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import l2rebound
from l2rebound import Config, reference
from l2rebound.config import choices_of
from l2rebound.experiments import hyper_of, setup_runs, train_runs
from l2rebound.nets import layer_factors, num_params
from l2rebound.results import METRICS
from l2rebound.rules import OPTIMIZERS, RULES, all_optimizers, all_rules, register_optimizer, register_rule
from l2rebound.train import Hyper, Spec, regulariser_grad

pytestmark = pytest.mark.usefixtures("x64")

DIMS = [(2, 3, 2, 1), (3, 4, 5, 2), (2, 25, 25, 1)]
HYPERS = [(0.3, 5.0, 0.07), (1e-2, 50.0, 1e-3)]
"""(α, β, ρ): a soft and a sharp β."""

H = 1e-5
"""Step of the central differences. Their error is the truncation H²/6·|R'''| plus the rounding of the two
penalty sums, about ε·Σ|terms of R|/H. For |θ_i| >= 0.05 and the dims and hypers here, the truncation is at
most H²β²/6 = 4e-8 of an entry (drr's α term has |R'''| = β²|R'|; β = 50) and the rounding about 1e-8 of the
largest entry (Σ|terms| / max|∇R| is at most about P = 751). The tolerance, 1e-6 of the largest entry, is 20
times the 5e-8 measured; a wrong factor or a dropped term is off by far more. A rule with state (pmmp) is a
polynomial of degree 4 in entries of at most 1.5, so its truncation is below 1e-9, and its rounding as above
over blocks·P entries."""


def rule_oracle(name: str) -> reference.ReferenceRule:
    """The NumPy oracle of rule ``name``; a member without one fails here, by name."""
    try:
        return reference.rule_oracle(name)
    except ValueError:
        pytest.fail(f"rule {name!r} has no NumPy oracle: give it one (Rule.oracle, or reference.REFERENCE_RULES)")


def optimizer_oracle(name: str) -> reference.ReferenceOptimizer:
    """The NumPy oracle of optimiser ``name``; a member without one fails here, by name."""
    try:
        return reference.optimizer_oracle(name)
    except ValueError:
        pytest.fail(f"optimizer {name!r} has no NumPy oracle: give it one (Optimizer.oracle, or "
                    "reference.REFERENCE_OPTIMIZERS)")


def hyper(alpha, beta, rho) -> Hyper:
    """The regulariser's scalars as the engine passes them; the rest 0 (the rules do not read them)."""
    zero = jnp.zeros(())
    return Hyper(zero, zero, jnp.asarray(alpha), jnp.asarray(beta), jnp.asarray(rho), zero)


def theta_away_from_zero(dims, seed: int) -> jax.Array:
    """θ (P,) with 0.05 <= |θ_i| <= 1.5 and random signs: no difference of step ``H`` crosses a kink at 0."""
    rng, P = np.random.default_rng(seed), num_params(dims)
    return jnp.asarray(rng.choice([-1.0, 1.0], P) * rng.uniform(0.05, 1.5, P))


def point(rule, dims, seed: int) -> jax.Array:
    """z (blocks·P,) where every term of the rule's penalty is active: θ is ``theta_away_from_zero``, each
    block of the rule's state uniform in [0.1, 0.9], inside (0, 1) where a probability lives and away from 0
    where a multiplier would switch its terms off. For a rule without state, z = θ."""
    theta = theta_away_from_zero(dims, seed)
    if rule.blocks == 1:
        return theta
    state = np.random.default_rng([seed, 1]).uniform(0.1, 0.9, (rule.blocks - 1) * theta.size)
    return jnp.concatenate([theta, jnp.asarray(state)])


def descent_signs(rule, P: int) -> np.ndarray:
    """(blocks·P,): 1 where ``grad`` is ∂R/∂z, -1 on the ascent blocks, where it is -∂R/∂z."""
    signs = np.ones((rule.blocks, P))
    signs[list(rule.ascent)] = -1
    return signs.ravel()


def trained_by_the_epoch_engine(names) -> list:
    """The rules ``names`` as parameters; one with state beside θ is skipped, by name."""
    return [pytest.param(name, marks=pytest.mark.skip(
        reason=f"{name} trains state beside theta (blocks = {all_rules()[name].blocks}), the epoch engine theta "
               "alone: the compression procedure's engine trains it, tested with that engine"))
            if all_rules()[name].blocks > 1 else name for name in names]


@partial(jax.jit, static_argnums=0)
def central_differences(penalty, theta, factor, hyper):
    """(R(θ + H e_i) - R(θ - H e_i)) / 2H for every i, shape (P,), in one call."""
    def along(e):
        return (penalty(theta + H * e, factor, hyper) - penalty(theta - H * e, factor, hyper)) / (2 * H)

    return jax.vmap(along)(jnp.eye(theta.size, dtype=theta.dtype))


@pytest.mark.parametrize("dims", DIMS, ids=lambda d: ",".join(map(str, d)))
@pytest.mark.parametrize("name", list(all_rules()))
def test_rule_grad_matches_finite_differences_of_its_penalty(name, dims):
    rule, factor = all_rules()[name], jnp.asarray(layer_factors(dims))
    z, signs = point(rule, dims, sum(dims)), descent_signs(rule, factor.size)
    for alpha, beta, rho in HYPERS:
        fd = signs * np.asarray(central_differences(rule.penalty, z, factor, hyper(alpha, beta, rho)))
        grad = rule.grad(z, factor, hyper(alpha, beta, rho))
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max(), err_msg=(alpha, beta, rho))


@pytest.mark.parametrize("dims", DIMS, ids=lambda d: ",".join(map(str, d)))
@pytest.mark.parametrize("name", list(all_rules()))
def test_rule_grad_matches_autodiff_of_its_penalty(name, dims):
    # away from 0 only: at θ_i = 0 autodiff takes d|θ|/dθ = 1, the closed form sign(0) = 0
    rule, factor = all_rules()[name], jnp.asarray(layer_factors(dims))
    z, signs = point(rule, dims, sum(dims) + 1), descent_signs(rule, factor.size)
    for alpha, beta, rho in HYPERS:
        auto = signs * jax.grad(rule.penalty)(z, factor, hyper(alpha, beta, rho))
        grad = rule.grad(z, factor, hyper(alpha, beta, rho))
        # the same formula in another order: a few ulps
        np.testing.assert_allclose(grad, auto, rtol=1e-12, atol=1e-13 * np.abs(auto).max(), err_msg=(alpha, beta, rho))


@pytest.mark.parametrize("dims", DIMS, ids=lambda d: ",".join(map(str, d)))
@pytest.mark.parametrize("name", list(all_rules()))
def test_rule_matches_its_numpy_oracle(name, dims):
    """Through the engine's ``regulariser_grad`` (which supplies the layer factors), at θ with exact zeros,
    where both take sign(0) = 0; a rule with state on its whole z."""
    rule, oracle = all_rules()[name], rule_oracle(name)
    factor, spec = jnp.asarray(layer_factors(dims)), Spec(dims, name, "gd", "off", 0)
    z = point(rule, dims, sum(dims) + 2).at[:factor.size:7].set(0.0)
    fac = reference.layer_factors(dims)
    for alpha, beta, rho in HYPERS:
        ours = regulariser_grad(spec, hyper(alpha, beta, rho), z)
        expected = oracle.grad(np.asarray(z), fac, alpha, beta, rho)
        penalty = oracle.penalty(np.asarray(z), fac, alpha, beta, rho)
        # a rule with state: its oracle writes the formula in another form, whose rounding differs where its
        # terms cancel, so 1e-10 of the largest entry; a rule without state: the same formula, a few ulps
        rtol, atol = (1e-13, 0) if rule.blocks == 1 else (1e-10, 1e-10 * np.abs(expected).max())
        np.testing.assert_allclose(ours, expected, rtol=rtol, atol=atol, err_msg=(alpha, beta, rho))
        np.testing.assert_allclose(rule.penalty(z, factor, hyper(alpha, beta, rho)), penalty, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", list(all_rules()))
def test_rule_starts_at_theta_and_its_projection_is_idempotent(name):
    rule, dims = all_rules()[name], DIMS[0]
    theta = theta_away_from_zero(dims, 5)
    for start in (theta, theta.astype(jnp.float32)):
        z = rule.start(start, hyper(*HYPERS[0]))
        assert z.shape == (rule.blocks * theta.size,) and z.dtype == start.dtype
        np.testing.assert_array_equal(z[:theta.size], start)
    moved = 3 * point(rule, dims, 6) - 1  # the state's blocks in [-0.7, 1.7]: out of [0, 1] on both sides
    once = rule.after_step(moved)
    assert once.shape == moved.shape
    np.testing.assert_array_equal(rule.after_step(once), once)


def test_pmmp_starts_with_theta_kept_for_sure_and_projects_p_onto_probabilities():
    rule, dims, h = RULES["pmmp"], DIMS[0], hyper(*HYPERS[0])
    theta, factor = theta_away_from_zero(dims, 7), jnp.asarray(layer_factors(dims))
    P = theta.size
    z = rule.start(theta, h)
    np.testing.assert_array_equal(z, np.concatenate([theta, theta, np.ones(P), np.zeros(P)]))  # θ, w, p, u
    # θ = w·Bernoulli(1) exactly: the constraint's terms vanish, the expected L0 norm is α·Σ factor
    np.testing.assert_allclose(rule.penalty(z, factor, h), HYPERS[0][0] * np.sum(factor), rtol=1e-13)
    np.testing.assert_array_equal(rule.grad(z, factor, h), np.concatenate([np.zeros(2 * P), factor * h.alpha,
                                                                           np.zeros(P)]))
    moved = jnp.asarray(np.random.default_rng(8).normal(0.5, 1.0, 4 * P))
    p = np.asarray(moved[2 * P:3 * P])
    assert (p < 0).any() and (p > 1).any() and ((0 < p) & (p < 1)).any()
    projected = np.asarray(rule.after_step(moved))
    np.testing.assert_array_equal(projected[2 * P:3 * P], np.clip(p, 0, 1))
    np.testing.assert_array_equal(np.delete(projected, np.s_[2 * P:3 * P]), np.delete(moved, np.s_[2 * P:3 * P]))


def test_pmmp_refuses_theta_alone():
    """The epoch engine passes θ (P,): pmmp says so rather than read θ as its four blocks."""
    dims, h = DIMS[0], hyper(*HYPERS[0])
    theta, factor = theta_away_from_zero(dims, 9), jnp.asarray(layer_factors(dims))
    for member in (RULES["pmmp"].penalty, RULES["pmmp"].grad):
        with pytest.raises(ValueError, match="pmmp trains z"):
            member(theta, factor, h)
    with pytest.raises(ValueError, match="pmmp trains z"):
        regulariser_grad(Spec(dims, "pmmp", "gd", "off", 0), h, theta)


def test_a_rule_climbs_only_blocks_of_its_state():
    for blocks, ascent in ((0, ()), (2, (0,)), (2, (2,))):
        with pytest.raises(ValueError, match="ascent"):
            dataclasses.replace(RULES["pmmp"], blocks=blocks, ascent=ascent)


@pytest.mark.parametrize("name", list(all_optimizers()))
def test_optimizer_steps_match_its_numpy_oracle(name):
    # gradients from 1e-9 to 1: below Adam's eps, where it matters, up to where it does not
    oracle, transform = optimizer_oracle(name), all_optimizers()[name].transform()
    rng, lr = np.random.default_rng(9), 3e-2
    expected = rng.normal(size=12)
    theta, expected_state = jnp.asarray(expected), oracle.init(12, np.float64)
    state = transform.init(theta)
    for _ in range(5):
        grad = rng.normal(size=12) * rng.choice([1e-9, 1e-3, 1.0], 12)
        direction, state = transform.update(jnp.asarray(grad), state)
        theta = theta + -lr * direction  # as the training step applies it
        expected, expected_state = oracle.step(expected, grad, expected_state, lr)
    np.testing.assert_allclose(theta, expected, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("optimizer", list(all_optimizers()))
@pytest.mark.parametrize("rule", trained_by_the_epoch_engine(all_rules()))
def test_training_matches_the_numpy_oracle(rule, optimizer):
    rule_oracle(rule)
    optimizer_oracle(optimizer)
    # the regulariser's step (η·α·β·factor ~ 1e-3) dwarfs the tolerance: a wrong gradient shows within the
    # 50 epochs. The default jitter projection runs every epoch, which the oracle does not do: it must leave
    # a generic student exactly as it is.
    config = Config(teacher_dims=(2, 6, 5, 1), dataset_size=300, test_set_size=60, runs=2, epochs=50,
                    train=rule, optimizer=optimizer, initial_permut=0.05, noise_sigma=1e-2,
                    learning_rate=1e-2, alpha=1e-2, beta=10.0, rho=1e-2)
    seeds = config.seed + np.arange(1, config.runs + 1)
    _, problem, student, keys = setup_runs(config, seeds, seeds)
    metrics, diverged, final, _ = train_runs(config, hyper_of(config, config.runs), problem, student, keys)
    assert (diverged == -1).all()
    assert final.dtype == np.float64
    for r in range(config.runs):
        train, test = jax.tree.map(lambda a, r=r: np.asarray(a[r]), (problem.train, problem.test))
        expected = reference.train(
            student[r], problem.teacher[r], config.student_dims, train.x, train.labels(config.noise_sigma),
            test.x, test.labels(config.noise_sigma), test.clean, epochs=config.epochs, rule=rule,
            alpha=config.alpha, beta=config.beta, rho=config.rho, optimizer=optimizer, lr=config.learning_rate,
        )
        for metric in METRICS[:-1]:
            np.testing.assert_allclose(metrics[metric][r], expected[metric], rtol=0, atol=1e-10, err_msg=metric)
        # the student moved: the comparison is not between two constant curves
        assert abs(expected["l2"][-1] - expected["l2"][0]) > 1e-4


@pytest.mark.parametrize("rule", trained_by_the_epoch_engine(all_rules()))
def test_masked_training_matches_the_numpy_oracle(rule):
    """Fine-tuning a pruned student: the masked entries stay exactly zero, the others follow the oracle."""
    config = Config(teacher_dims=(2, 6, 5, 1), dataset_size=300, test_set_size=60, runs=2, epochs=40, train=rule,
                    optimizer="adam", initial_permut=0.05, noise_sigma=1e-2, alpha=1e-2, projection="off")
    seeds = config.seed + np.arange(1, config.runs + 1)
    _, problem, student, keys = setup_runs(config, seeds, seeds)
    mask = (np.random.default_rng(3).random(student.shape) < 0.7).astype(student.dtype)
    student = student * mask
    problem = problem._replace(mask=mask)
    metrics, diverged, final, _ = train_runs(config, hyper_of(config, config.runs), problem, student, keys)
    assert (diverged == -1).all() and (final[mask == 0] == 0).all()
    for r in range(config.runs):
        train, test = jax.tree.map(lambda a, r=r: np.asarray(a[r]), (problem.train, problem.test))
        expected = reference.train(
            student[r], problem.teacher[r], config.student_dims, train.x, train.labels(config.noise_sigma),
            test.x, test.labels(config.noise_sigma), test.clean, epochs=config.epochs, rule=rule,
            alpha=config.alpha, beta=config.beta, rho=config.rho, optimizer="adam", lr=config.learning_rate,
            mask=mask[r])
        for metric in METRICS[:-1]:
            np.testing.assert_allclose(metrics[metric][r], expected[metric], rtol=0, atol=1e-10, err_msg=metric)
        assert abs(expected["l2"][-1] - expected["l2"][0]) > 1e-4


@pytest.mark.parametrize("field, registry, oracles, oracle", [
    ("train", all_rules(), reference.REFERENCE_RULES, rule_oracle),
    ("optimizer", all_optimizers(), reference.REFERENCE_OPTIMIZERS, optimizer_oracle),
], ids=["rules", "optimizers"])
def test_registry_names_are_the_config_choices_and_the_oracles(field, registry, oracles, oracle):
    choices = {f.name: choices_of(f) for f in dataclasses.fields(Config)}[field]
    assert sorted(choices) == sorted(registry)
    assert set(oracles) <= set(registry), "every built-in oracle has its member"
    for name, member in registry.items():
        oracle(name)  # every member has its oracle
        assert member.name == name
        assert member.help and "\n" not in member.help, name  # one line of CLI help


def test_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="l1"):
        register_rule(RULES["l1"])
    with pytest.raises(ValueError, match="adam"):
        register_optimizer(OPTIMIZERS["adam"])


@pytest.mark.parametrize("name", ["l1", "drr"])
def test_without_layer_factors_every_parameter_weighs_one(name):
    """``--layer-factors off``: the engine's regulariser gradient is the oracle's with factor 1 everywhere."""
    dims = (2, 5, 3, 1)
    theta = theta_away_from_zero(dims, 3)
    spec = Spec(dims, name, "gd", "off", 0, layer_factors=False)
    got = np.asarray(regulariser_grad(spec, hyper(0.3, 5.0, 0.07), theta))
    want = rule_oracle(name).grad(np.asarray(theta), np.ones(len(theta)), 0.3, 5.0, 0.07)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    factored = np.asarray(regulariser_grad(Spec(dims, name, "gd", "off", 0), hyper(0.3, 5.0, 0.07), theta))
    assert name == "l1" or not np.allclose(factored, got)  # drr's factors differ from 1


def test_alpha_per_sample_trains_as_alpha_over_the_dataset_size():
    """``--alpha-scale per-sample`` with α = a·N trains the epoch experiment exactly as α = a in total."""
    base = Config(teacher_dims=(2, 3, 1), dataset_size=40, test_set_size=8, epochs=5, runs=2, train="drr",
                  initial_permut=0.1, noise_sigma=0.0)
    total = l2rebound.run(base.replace(alpha=0.25 / 40), progress=False)
    per_sample = l2rebound.run(base.replace(alpha=0.25, alpha_scale="per-sample"), progress=False)
    np.testing.assert_array_equal(per_sample.metrics["l2"], total.metrics["l2"])
