"""The training rules and the optimisers, each a registry keyed by the name a config gives.

A training rule is a regulariser R(θ) whose gradient the training step adds to the loss gradient; an
optimiser turns that sum into the direction of a step, which the step scales by -η. The training engine
looks both up by name, so the names are the whole interface.

Units: θ and its gradient are per run, shape (P,). The penalty is in the loss's units (squared network
outputs); its gradient in loss units per unit of θ. α is in loss units, β in inverse units of θ, ρ in loss
units per unit of θ squared.

Adding a member takes one ``Rule`` (or ``Optimizer``) carrying its independent NumPy oracle (``oracle``):
registered here with ``register_rule`` (the built-in members' oracles are ``reference.REFERENCE_RULES`` and
``reference.REFERENCE_OPTIMIZERS``), or by another installed package under the entry-point group
``l2rebound.rules`` (``l2rebound.optimizers``): its name is known without loading it (``rule_names``), and
it is loaded when looked up (``rule``) or when every member is listed (``all_rules``). The config's choices,
the CLI options and the test battery (``tests/test_rules.py``) follow
the registries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from l2rebound.registry import OPTIMIZER_GROUP, RULE_GROUP, RegistryError, listed, load_plugin, plugin_names

if TYPE_CHECKING:
    import jax
    import optax

# The members import JAX and optax when called, not here: the config reads the registries' names, and the
# CLI's --help reads the config without loading the engine.


@dataclass(frozen=True)
class Rule:
    """A training rule: the regulariser R(θ) and the gradient the training step adds for it.

    ``factor`` is ``nets.layer_factors(dims)`` as an array (P,) of θ's dtype, the per-parameter weight
    (P / L) / n_l of the parameter's layer; ``hyper`` is anything with scalar ``.alpha .beta .rho``
    (``train.Hyper``). Neither function keeps state.

    penalty(theta (P,), factor (P,), hyper) -> R(θ), a scalar, differentiable by JAX away from θ_i = 0.
    grad(theta (P,), factor (P,), hyper) -> ∇R(θ) (P,) in closed form, taking sign(0) = 0: at exactly
        θ_i = 0 a kink's subgradient 0 (autodiff of |θ| would give 1 there).
    """

    name: str
    help: str  # one line, for the CLI
    penalty: Callable[..., jax.Array]
    grad: Callable[..., jax.Array]
    uses: tuple[str, ...] = ()  # the config's strengths it reads (alpha, beta, rho): a sweep over another is refused
    oracle: Any = None  # its NumPy oracle, a ``reference.ReferenceRule`` (built-in rules: in ``reference``)


@dataclass(frozen=True)
class Optimizer:
    """An optimiser: ``transform()`` maps the gradient (P,) to the direction (P,) of a step before the
    training step scales it by -η; its state is per run and holds no η."""

    name: str
    help: str  # one line, for the CLI
    transform: Callable[[], optax.GradientTransformation]
    oracle: Any = None  # its NumPy oracle, a ``reference.ReferenceOptimizer`` (built-in ones: in ``reference``)


RULES: dict[str, Rule] = {}
OPTIMIZERS: dict[str, Optimizer] = {}


def _register(registry: dict, member):
    """Add ``member`` under its name, refusing a name that is taken (a second entry would silently
    replace the first one's numbers)."""
    if member.name in registry:
        raise ValueError(f"{member.name!r} is registered already")
    registry[member.name] = member
    return member


def register_rule(rule: Rule) -> Rule:
    """Add ``rule`` to ``RULES`` under its name; a taken name is refused (``ValueError``)."""
    return _register(RULES, rule)


def register_optimizer(optimizer: Optimizer) -> Optimizer:
    """Add ``optimizer`` to ``OPTIMIZERS`` under its name; a taken name is refused (``ValueError``)."""
    return _register(OPTIMIZERS, optimizer)


@functools.cache
def _plugin(group: str, name: str) -> Rule | Optimizer:
    """The member of another package's entry point ``name`` in ``group``, loaded once per process; it may
    not take a built-in name (``RegistryError``)."""
    kind, builtin = (Rule, RULES) if group == RULE_GROUP else (Optimizer, OPTIMIZERS)
    return load_plugin(group, name, lambda member: isinstance(member, kind) and member.name == name, taken=builtin)


def _lookup(registry: dict, group: str, name: str):
    if name in registry:
        return registry[name]
    if name in plugin_names(group):
        return _plugin(group, name)
    raise RegistryError(f"no {'rule' if group == RULE_GROUP else 'optimizer'} is named {name!r} (registered: "
                        f"{', '.join(dict.fromkeys([*registry, *plugin_names(group)]))})")


def rule_names() -> tuple[str, ...]:
    """Every training rule's name, those of installed packages included (nothing is loaded)."""
    return tuple(dict.fromkeys([*RULES, *plugin_names(RULE_GROUP)]))


def optimizer_names() -> tuple[str, ...]:
    """Every optimiser's name, those of installed packages included (nothing is loaded)."""
    return tuple(dict.fromkeys([*OPTIMIZERS, *plugin_names(OPTIMIZER_GROUP)]))


def rule(name: str) -> Rule:
    """The training rule ``name`` (``RegistryError`` when there is none, or its plugin cannot be loaded)."""
    return _lookup(RULES, RULE_GROUP, name)


def optimizer(name: str) -> Optimizer:
    """The optimiser ``name`` (``RegistryError`` when there is none, or its plugin cannot be loaded)."""
    return _lookup(OPTIMIZERS, OPTIMIZER_GROUP, name)


def all_rules() -> dict[str, Rule]:
    """Every training rule by name, loaded: those registered here, then those of installed packages (one that
    cannot be loaded, or takes a registered name, is left out with a warning)."""
    return {**RULES, **listed(plugin_names(RULE_GROUP), lambda name: _plugin(RULE_GROUP, name))}


def all_optimizers() -> dict[str, Optimizer]:
    """Every optimiser by name, loaded, as ``all_rules``."""
    return {**OPTIMIZERS, **listed(plugin_names(OPTIMIZER_GROUP), lambda name: _plugin(OPTIMIZER_GROUP, name))}


def _vanilla_penalty(theta, factor, hyper):
    import jax.numpy as jnp

    return jnp.zeros((), theta.dtype)


def _vanilla_grad(theta, factor, hyper):
    import jax.numpy as jnp

    return jnp.zeros_like(theta)


def _l1_penalty(theta, factor, hyper):
    import jax.numpy as jnp

    return hyper.alpha * jnp.sum(jnp.abs(theta))


def _l1_grad(theta, factor, hyper):
    import jax.numpy as jnp

    return hyper.alpha * jnp.sign(theta)


def _drr_penalty(theta, factor, hyper):
    import jax.numpy as jnp

    return jnp.sum(factor * (hyper.alpha * (1 - jnp.exp(-hyper.beta * jnp.abs(theta))) + hyper.rho * theta**2))


def _drr_grad(theta, factor, hyper):
    import jax.numpy as jnp

    return factor * (hyper.alpha * hyper.beta * jnp.sign(theta) * jnp.exp(-hyper.beta * jnp.abs(theta))
                     + 2 * hyper.rho * theta)


register_rule(Rule("vanilla", "no regulariser: the loss gradient alone", _vanilla_penalty, _vanilla_grad))
register_rule(Rule("l1", "alpha * sum |theta|", _l1_penalty, _l1_grad, ("alpha",)))
register_rule(Rule("drr", "sum over layers of factor_l * (alpha * (1 - exp(-beta |theta|)) + rho * theta^2)",
                   _drr_penalty, _drr_grad, ("alpha", "beta", "rho")))



def _gd():
    """State optax.EmptyState; the direction is the gradient (loss units per unit of θ)."""
    import optax

    return optax.identity()


def _adam():
    """State ScaleByAdamState(count () int32, mu (P,) in gradient units, nu (P,) in squared gradient units);
    the direction is about ±1 per parameter, so that η is the step in units of θ. ε sits outside the square
    root."""
    import optax

    return optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)


register_optimizer(Optimizer("gd", "plain gradient descent: theta -= eta * gradient", _gd))
register_optimizer(Optimizer("adam", "Adam(b1=0.9, b2=0.999, eps=1e-8), bias-corrected; eta is about the step per "
                             "parameter", _adam))
