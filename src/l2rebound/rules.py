"""The training rules and the optimisers, each a registry keyed by the name a config gives.

A training rule is a regulariser R(θ) whose gradient the training step adds to the loss gradient; an
optimiser turns that sum into the direction of a step, which the step scales by -η. The training engine
looks both up by name, so the names are the whole interface. A rule may train state of its own beside θ
(``Rule.blocks``), as ``pmmp`` does.

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
    """A training rule: the regulariser R and the gradient the training step adds for it.

    ``factor`` is ``nets.layer_factors(dims)`` as an array (P,) of θ's dtype, the per-parameter weight
    (P / L) / n_l of the parameter's layer; ``hyper`` is anything with scalar ``.alpha .beta .rho``
    (``train.Hyper``).

    The rule trains z = (θ, s_1, ..., s_{blocks-1}), shape (blocks·P,): θ then its own state, one entry per
    parameter in each block; with ``blocks == 1`` (every rule but ``pmmp``) z = θ and the rule keeps no state.
    ``factor`` stays (P,), the factors of θ. The training step starts at ``start(θ, hyper)``, adds the loss
    gradient to z[:P] only, steps z along -η·(that sum plus ``grad``), then applies ``after_step``.

    penalty(z (blocks·P,), factor (P,), hyper) -> R(z), a scalar in loss units, differentiable by JAX away
        from θ_i = 0.
    grad(z (blocks·P,), factor (P,), hyper) -> (blocks·P,) in closed form: ∂R/∂z, except on the ``ascent``
        blocks, where it is -∂R/∂z so that descending it climbs R there (a minimax); sign(0) = 0: at exactly
        θ_i = 0 a kink's subgradient 0 (autodiff of |θ| would give 1 there).
    init(θ (P,), hyper) -> z (blocks·P,) in θ's dtype, the start; None: z = θ.
    project(z) -> z, applied after every step (e.g. a probability clipped to [0, 1]); None: none.
    settled(z) -> bool scalar: whether the state has settled enough for a validation check to count (a turning
        point, a stop); None: always.
    prune(z, mask (P,)) -> z: the state made consistent with θ pruned to ``mask`` (1 kept, 0 pruned); None: z.
    needs: the optimisers it can be trained with; (): any.
    """

    name: str
    help: str  # one line, for the CLI
    penalty: Callable[..., jax.Array]
    grad: Callable[..., jax.Array]
    uses: tuple[str, ...] = ()  # the config's strengths it reads (alpha, beta, rho): a sweep over another is refused
    oracle: Any = None  # its NumPy oracle, a ``reference.ReferenceRule`` (built-in rules: in ``reference``)
    blocks: int = 1  # P-sized blocks of z: θ and blocks - 1 of the rule's state
    init: Callable[..., jax.Array] | None = None
    project: Callable[[jax.Array], jax.Array] | None = None
    ascent: tuple[int, ...] = ()  # blocks of z that climb R (never 0: θ descends the loss)
    settled: Callable[[jax.Array], jax.Array] | None = None
    prune: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    needs: tuple[str, ...] = ()

    def __post_init__(self):
        if self.blocks < 1 or not all(0 < i < self.blocks for i in self.ascent):
            raise ValueError(f"rule {self.name!r}: blocks {self.blocks} must be >= 1 and its ascent blocks "
                             f"{self.ascent} among the state's, 1 to blocks - 1")

    def start(self, theta, hyper):
        """The z (blocks·P,) that training starts from at θ (P,): ``init(θ, hyper)``, or θ itself."""
        return theta if self.init is None else self.init(theta, hyper)

    def after_step(self, z):
        """z after a step: ``project(z)``, or z itself."""
        return z if self.project is None else self.project(z)


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


# PMMP, the probabilistic minimax method: z = (θ, w, p, u), each (P,).
# θ_i is kept with probability p_i (dimensionless), at the value w_i (units of θ); α·Σ factor·p is the expected
# L0 norm. u_i (loss units per unit of θ squared) is a Lagrange multiplier of the constraint that the random
# weight w_i·Bernoulli(p_i) be θ_i: its mean w_i p_i equal to θ_i and its variance w_i² p_i (1 - p_i) zero, so
# that at a saddle point p_i is 0 or 1. θ, w and p descend R; u climbs it. grad's blocks are in loss units
# per unit of θ (θ, w), loss units (p) and units of θ squared (u).

def _pmmp_blocks(z, factor):
    """θ, w, p, u, each (..., P), of z (..., 4P); a z of another size is refused, by name, at trace time:
    the epoch engine passes θ alone, which this rule cannot train."""
    P = factor.shape[-1]
    if z.shape[-1] != 4 * P:
        raise ValueError(f"pmmp trains z = (theta, w, p, u) of 4 * {P} entries, not {z.shape[-1]}: it runs in "
                         "an engine that trains the rule's state (Rule.start, Rule.after_step)")
    return z[..., :P], z[..., P:2 * P], z[..., 2 * P:3 * P], z[..., 3 * P:]


def _pmmp_penalty(z, factor, hyper):
    import jax.numpy as jnp

    theta, w, p, u = _pmmp_blocks(z, factor)
    return jnp.sum(factor * hyper.alpha * p + u * ((theta - w * p) ** 2 + w**2 * p * (1 - p)))


def _pmmp_grad(z, factor, hyper):
    import jax.numpy as jnp

    theta, w, p, u = _pmmp_blocks(z, factor)
    gap = theta - w * p  # θ minus the mean of the random weight
    return jnp.concatenate([
        2 * u * gap,
        -2 * u * gap * p + 2 * u * w * p * (1 - p),
        -2 * u * gap * w + u * w**2 * (1 - 2 * p) + factor * hyper.alpha,
        -(gap**2 + w**2 * p * (1 - p)),  # ascent: -∂R/∂u
    ], axis=-1)


def _pmmp_init(theta, hyper):
    """w = θ, p = 1, u = 0: the random weight is θ for sure, R is α·Σ factor."""
    import jax.numpy as jnp

    return jnp.concatenate([theta, theta, jnp.ones_like(theta), jnp.zeros_like(theta)], axis=-1)


def _pmmp_project(z):
    """p clipped to [0, 1], a probability; θ, w and u as they are."""
    import jax.numpy as jnp

    P = z.shape[-1] // 4
    return jnp.concatenate([z[..., :2 * P], jnp.clip(z[..., 2 * P:3 * P], 0, 1), z[..., 3 * P:]], axis=-1)


def _pmmp_settled(z):
    """At most 1% of the p_i still undecided, strictly between 0.1 and 0.9."""
    import jax.numpy as jnp

    P = z.shape[-1] // 4
    p = z[..., 2 * P:3 * P]
    return jnp.mean((p > 0.1) & (p < 0.9), axis=-1) <= 0.01


def _pmmp_prune(z, mask):
    """p set to 0 where θ is pruned: a pruned weight is kept with probability 0."""
    P = z.shape[-1] // 4
    return z.at[..., 2 * P:3 * P].multiply(mask)


# Adam only: the multipliers u climb by about η per step under Adam whatever the constraint's violation; under
# plain gradient descent their step is η times the squared violation, so they stay near 0 and the constraint
# θ = w·p is never enforced within a training's length.
register_rule(Rule("pmmp", "probabilistic minimax: alpha * sum factor * p, theta = w * Bernoulli(p) enforced by "
                   "multipliers u; trains (theta, w, p, u); Adam only", _pmmp_penalty, _pmmp_grad, ("alpha",),
                   blocks=4, init=_pmmp_init, project=_pmmp_project, ascent=(3,), settled=_pmmp_settled,
                   prune=_pmmp_prune, needs=("adam",)))


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
