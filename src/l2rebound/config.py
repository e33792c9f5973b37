"""The one frozen configuration of an experiment.

``Config`` is the single source of truth: the CLI builds its options from the field metadata, the store
names a result folder by ``config_hash``, and figure file names carry ``changed_fields``. Defaults are
the table in the README of ℓ₂-Experiments (the Julia original). Every field is validated on construction;
a bad value raises ``ConfigError`` naming the CLI option and what it accepts. ``presets`` holds the named
set-ups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from l2rebound import registry
from l2rebound.rules import optimizer, optimizer_names, rule, rule_names


class ConfigError(ValueError):
    """A config value that the experiments cannot run with; the message names the CLI option."""


INT_LIMIT = 2**62
"""Integer fields are below this in size: they stay exact in JAX's 64-bit integers and in a NumPy int64."""
SEED_LIMIT = 2**53
"""Seeds s with 0 <= s and s + runs <= SEED_LIMIT: every run's seed is then an exact double, so any tool
that reads ``runs.csv`` gets it exactly (and JAX's 64-bit seed never wraps)."""
STEM_BYTES = 100
"""Longest figure-file stem in bytes; a longer one is cut and ends in a hash of the config, so that a figure's
file name (the stem, its view and extension, e.g. ``_normalised_l2sq.png``) stays within about 120 characters,
readable in a file browser and far under the file systems' 255-byte limit. The folder already names the config
by its hash; the figure's subtitle lists every changed field."""

NUMERICS_VERSION = 6
"""Part of every ``config_hash``: raise it with any change that alters a computed number, so that the store
does not reuse results computed by older code for the same config. 2: ``l2_aligned`` is the certified
search's upper bound (never above, sometimes below, the heuristic alignment of version 1). 3: its node budget
counts the nodes beyond the root (version 2 counted the root). 4: networks with at most 3 hidden layers of at
most 6 units are aligned to the end, whatever the budget (``certify.node_budget``). 5: float32 trains through
the fused kernel (float32 numbers change within float32 rounding). 6: a node-limited alignment bounds by the
better of the two sets of layers that cover every pair and stops when its remaining nodes cannot raise the
lower bound by a share of the gap (``certify.FUTILE_SHARE``): far students' bounds change."""


def parse_dims(text: str) -> tuple[int, ...]:
    """Parse ``"2,25,25,1"`` into ``(2, 25, 25, 1)``."""
    try:
        return tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise ConfigError(f"expected comma-separated integers such as 2,25,25,1, got {text!r}") from None


def parse_noise_levels(text: str) -> tuple[float, ...]:
    """Parse ``"1e-5,1e-4,1e-3"`` (a list) or ``"1e-5:1:25"`` (START:STOP:COUNT, log-spaced, both ends
    included) into a tuple of noise levels."""
    text = str(text).strip()
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            start, stop, count = float(start), float(stop), int(count)
        else:
            return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--noise-levels expects a list like 1e-5,1e-4 or START:STOP:COUNT like 1e-5:1:25, "
                          f"got {text!r}") from None
    if count < 2 or not 0 < start < stop:
        raise ConfigError(f"--noise-levels START:STOP:COUNT needs 0 < START < STOP and COUNT >= 2, got {text!r}")
    return tuple(float(v) for v in np.geomspace(start, stop, count))


def parse_alphas(text: str) -> tuple[float, ...]:
    """Parse ``"0,0.05,0.1"`` into a tuple of regulariser strengths."""
    try:
        return tuple(float(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--alphas expects a list of numbers like 0,0.05,0.1, got {text!r}") from None


STORAGE_FORMS = ("full", "compact")
"""How a result can be stored (``Config.storage``; ``store`` writes and reads both)."""

PAPER_ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 5.0, 10.0)
"""The α grid of the compression procedure's published study."""

SEED_NOISE_LEVELS = tuple(1e-5 * 1.615**i for i in range(25))
"""The original Experiment C grid: 25 levels 1e-5·1.615^i, i = 0…24 (1e-5 to 0.99)."""


def _opt(help: str, choices=None, parse=None, **extra) -> dict:
    """A field's metadata: its CLI help; its ``choices`` (a tuple, or a function giving the names of a registry,
    asked when needed: ``choices_of``) and, for a registry, ``member``, which loads the member a name stands
    for (``RegistryError`` when it cannot); how its option's text is parsed; ``per_kind``: a field that only
    the kinds naming it in ``KindSpec.fields`` use; ``cli=False``: no option; ``omitted_at_default``: a field
    added after results were stored, left out of ``to_dict`` (so of ``config.json`` and ``config_hash``) while
    it holds its default, so that those results keep their folders and read back with it; ``described=False``:
    a field that changes how a result is kept, not a number in it, left out of ``changed_text`` (descriptions,
    subtitles, figure names)."""
    return {"help": help, "choices": choices, "parse": parse, **extra}


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The values a config field accepts, if it takes a fixed set (rules and optimisers: every registered one)."""
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


@dataclass(frozen=True)
class Config:
    """Everything that determines an experiment's numbers (and nothing that does not)."""

    experiment: str = field(default=next(iter(registry.BUILTIN_KINDS)),
                            metadata=_opt("experiment kind (``registry.kind_names()``)", cli=False))
    teacher_dims: tuple[int, ...] = field(
        default=(2, 25, 25, 1),
        metadata=_opt("teacher layer widths d0,d1,...,dL (tanh hidden layers, linear output)", parse=parse_dims),
    )
    student_dims: tuple[int, ...] | None = field(
        default=None,
        metadata=_opt("student layer widths, each >= the teacher's; the teacher is padded with zeros",
                      parse=parse_dims),
    )
    learning_rate: float = field(default=1e-2, metadata=_opt("step size eta (> 0)", parse=float))
    noise_sigma: float = field(
        default=1e-3,
        metadata=_opt("label noise sigma: y = f_teacher(x) + sigma*z (>= 0)", parse=float, per_kind=True),
    )
    noise_levels: tuple[float, ...] = field(
        default=SEED_NOISE_LEVELS,
        metadata=_opt("noise experiment: the levels sigma, a list 1e-5,1e-4,... or START:STOP:COUNT log-spaced "
                      "[default: the original 25 levels 1e-5*1.615^i]", parse=parse_noise_levels, per_kind=True),
    )
    initial_permut: float = field(
        default=0.0,
        metadata=_opt("student start: teacher + p*xi, p >= 0 (initial_permut of the Julia original)", parse=float),
    )
    perturbation: str = field(
        default="uniform", metadata=_opt("distribution of xi: uniform U[-1,1] or normal N(0,1)", ("uniform", "normal"))
    )
    student_init: str = field(
        default="perturb",
        metadata=_opt("student start: perturb the teacher, or a fresh Glorot network", ("perturb", "random")),
    )
    bias_init: str = field(
        default="zero",
        metadata=_opt("initial biases: zero (as the Julia original; teacher sits at the edge of F) or uniform U(-1,1)",
                      ("zero", "uniform")),
    )
    train: str = field(
        default="vanilla",
        metadata=_opt("training rule: regulariser gradient added to the loss gradient", rule_names, member=rule),
    )
    alpha: float = field(default=1e-4, metadata=_opt("regulariser strength alpha for l1 and drr (>= 0)", parse=float))
    alpha_scale: str = field(
        default="total",
        metadata=_opt("total: alpha as given; per-sample: alpha divided by --dataset-size (the loss is a mean over "
                      "samples, so this keeps the regulariser's weight per sample fixed)", ("total", "per-sample")),
    )
    layer_factors: str = field(
        default="on",
        metadata=_opt("on: drr weighs each layer's parameters by (P/L)/n_l; off: every parameter alike",
                      ("on", "off")),
    )
    beta: float = field(default=10.0, metadata=_opt("drr sharpness beta (> 0)", parse=float))
    rho: float = field(default=0.0, metadata=_opt("drr weight-decay strength rho (>= 0)", parse=float))
    optimizer: str = field(
        default="gd", metadata=_opt("optimiser: plain gradient descent or Adam(0.9, 0.999, 1e-8)", optimizer_names,
                      member=optimizer)
    )
    projection: str = field(
        default="jitter",
        metadata=_opt("projection onto the generic class F: ulp jitter of violating entries; margin: the Euclidean "
                      "projection onto |w| >= eps, |b| >= eps, sorted |b| eps apart, then the jitter; or none",
                      ("jitter", "margin", "off")),
    )
    margin: float = field(
        default=1e-3, metadata=_opt("eps of --projection margin (> 0); only used with it", parse=float)
    )
    projection_frequency: int = field(
        default=1, metadata=_opt("project the student after epochs n, 2n, ...; 0 never (>= 0)", parse=int)
    )
    align_every: int = field(
        default=10,
        metadata=_opt("record the symmetry-aligned and normal-form distances (and keep theta) every k epochs and at "
                      "the last; 0 never (>= 0). Each record costs host time per run (README, 'Three distances')",
                      parse=int, per_kind=True),
    )
    align_budget: int = field(
        default=4,
        metadata=_opt("branch-and-bound nodes per student beyond the root for the certified aligned distance, at "
                      "most (not spent where they cannot raise the lower bound by 5% of the gap): l2_aligned is the "
                      "best relabelling found, l2_aligned_lower a certified lower bound, equal when the search "
                      "ends within the budget; 0: the root's bound only (>= 0). Networks of at most 3 "
                      "hidden layers of at most 6 units are searched to the end whatever the budget. A node count, "
                      "not a time: the numbers are reproducible (README, 'Three distances')", parse=int),
    )
    prune_threshold: float = field(
        default=1e-3,
        metadata=_opt("compress: after training, every parameter with |theta| < T is set to 0 (global magnitude "
                      "pruning; 0: none; >= 0)", parse=float, per_kind=True),
    )
    prune_method: str = field(
        default="threshold",
        metadata=_opt("compress: threshold: every |theta| < --prune-threshold is pruned; search: random-gradient "
                      "pruning, the largest threshold keeping the training loss within 1 + --tamade-tolerance "
                      "times the unpruned one, random-gradient pruning again", ("threshold", "search"),
                      per_kind=True),
    )
    finetune_epochs: int = field(
        default=0,
        metadata=_opt("epochs of training after pruning with the pruned entries held at 0 (>= 0); compress: all of "
                      "them (needs a prune threshold > 0); procedure: at most these", parse=int, per_kind=True),
    )
    alphas: tuple[float, ...] = field(
        default=PAPER_ALPHAS,
        metadata=_opt("procedure: the regulariser strengths alpha, a list 0,0.05,... (each >= 0, none repeated) "
                      "[default: the published grid of 15, 0 to 10]", parse=parse_alphas, per_kind=True),
    )
    validation_set_size: int = field(
        default=5000, metadata=_opt("procedure: validation samples, which choose when to stop and which state to "
                                    "keep (>= 1)", parse=int, per_kind=True))
    min_epochs: int = field(
        default=0, metadata=_opt("procedure: epochs before the regularised phase may stop (<= --epochs)",
                                    parse=int, per_kind=True))
    finetune_min_epochs: int = field(
        default=0, metadata=_opt("procedure: epochs before fine-tuning may stop (<= --finetune-epochs)",
                                  parse=int, per_kind=True))
    check_every: int = field(
        default=10, metadata=_opt("procedure: epochs between checks of the validation loss (>= 1)", parse=int,
                                  per_kind=True))
    smoothing_window: int = field(
        default=30, metadata=_opt("procedure: validation losses the saturation test reads (>= 5)", parse=int,
                                  per_kind=True))
    tamade_tolerance: float = field(
        default=0.01, metadata=_opt("pruning by search keeps the training loss within (1 + this) times the "
                                    "unpruned one (> 0)", parse=float, per_kind=True))
    tamade_resolution: float = field(
        default=1e-7, metadata=_opt("pruning by search: width at which the threshold's bisection stops (> 0)",
                                    parse=float, per_kind=True))
    finetune_train: str = field(
        default="same", metadata=_opt("fine-tune with the training rule (same) or without a regulariser (vanilla)",
                                      ("same", "vanilla"), per_kind=True))
    seed: int = field(default=42, metadata=_opt(
        "base seed; run r draws everything from seed + r (0 <= seed, seed + runs <= 2^53)", parse=int))
    epochs: int = field(default=500, metadata=_opt("training epochs E (>= 0); one full-batch step each", parse=int))
    runs: int = field(default=10, metadata=_opt("independent runs R (>= 1)", parse=int))
    dataset_size: int = field(default=10_000, metadata=_opt("training samples N (>= 1)", parse=int))
    test_set_size: int = field(default=1_000, metadata=_opt("test samples M (>= 1)", parse=int))
    dtype: str = field(default="float64", metadata=_opt("floating-point precision", ("float64", "float32")))
    storage: str = field(
        default="full",
        metadata=_opt("how the result is stored, the same numbers either way: full: CSV tables and the students at "
                      "every --align-every epoch; compact: Parquet tables, compressed arrays and the students at the "
                      "last epoch only (align reaches no other), about a tenth of the room "
                      "[default: full; sweep: compact]", STORAGE_FORMS, omitted_at_default=True,
                      described=False),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind, value = type(f.default), getattr(self, f.name)
            if kind in (int, float):
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise ConfigError(f"{flag(f.name)} must be {'an integer' if kind is int else 'a number'}, not "
                                      f"{type(value).__name__} (got {value!r})")
                if kind is int and not isinstance(value, numbers.Integral) and not (
                        math.isfinite(value) and value == int(value)):
                    raise ConfigError(f"{flag(f.name)} must be an integer (got {value!r})")
                if kind is int and abs(value) >= INT_LIMIT:  # an integer of any size compares without overflow
                    raise ConfigError(f"{flag(f.name)} must be an integer below 2^62 in size (got {value!r})")
                object.__setattr__(self, f.name, kind(value))
            elif f.name in ("teacher_dims", "student_dims", "noise_levels", "alphas") and value is not None:
                what = numbers.Real if f.name in ("noise_levels", "alphas") else numbers.Integral
                if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or not all(
                        isinstance(v, what) and not isinstance(v, bool) for v in value):
                    raise ConfigError(f"{flag(f.name)} must be a sequence of "
                                      + ("numbers, e.g. (1e-3, 1e-2)" if what is numbers.Real
                                         else "integer layer widths, e.g. (2, 25, 25, 1)") + f" (got {value!r})")
        if self.student_dims is None:
            object.__setattr__(self, "student_dims", self.teacher_dims)
        object.__setattr__(self, "teacher_dims", tuple(map(int, self.teacher_dims)))
        object.__setattr__(self, "student_dims", tuple(map(int, self.student_dims)))
        object.__setattr__(self, "noise_levels", tuple(float(v) for v in self.noise_levels))
        object.__setattr__(self, "alphas", tuple(float(v) for v in self.alphas))
        self._validate()

    def _validate(self) -> None:
        names = registry.kind_names()
        if self.experiment not in names:
            raise ConfigError(f"experiment must be one of {', '.join(names)} (got {self.experiment!r})")
        try:
            spec = registry.kind(self.experiment)
        except registry.RegistryError as error:
            raise ConfigError(str(error)) from None
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = (set(spec.fields) - set(KIND_FIELDS)) | (set(spec.required) - fields)
        if unknown:
            raise ConfigError(f"the experiment kind {spec.name!r} names config fields that are not kind-specific ones "
                              f"or do not exist: {', '.join(sorted(unknown))}")
        for f in dataclasses.fields(self):
            if ((f.metadata.get("per_kind") and f.name not in spec.fields or f.name in spec.ignored)
                    and getattr(self, f.name) != f.default):
                raise ConfigError(f"{flag(f.name)} is not used by the {self.experiment} experiment")
            choices = choices_of(f)
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{flag(f.name)} must be one of {', '.join(choices)} (got {value!r})")
            if "member" in f.metadata:
                try:
                    f.metadata["member"](value)
                except registry.RegistryError as error:
                    raise ConfigError(f"{flag(f.name)} {value}: {error}") from None
        for name in ("teacher_dims", "student_dims"):
            dims = getattr(self, name)
            if len(dims) < 3 or any(d < 1 for d in dims):
                raise ConfigError(
                    f"{flag(name)} needs at least 3 positive sizes d0,d1,...,dL (one hidden layer or more), got "
                    + ",".join(map(str, dims))
                )
        t, s = self.teacher_dims, self.student_dims
        if len(s) != len(t) or s[0] != t[0] or s[-1] != t[-1] or any(a < b for a, b in zip(s, t)):
            raise ConfigError(
                f"--student-dims must have the teacher's depth, input and output sizes and be at least as wide "
                f"in every hidden layer (teacher {','.join(map(str, t))}, student {','.join(map(str, s))})"
            )
        if not self.noise_levels or not all(0 < v < float("inf") for v in self.noise_levels):
            raise ConfigError(f"--noise-levels must be one or more finite numbers > 0 (got {self.noise_levels})")
        repeated = sorted({v for v in self.noise_levels if self.noise_levels.count(v) > 1})
        if repeated:
            raise ConfigError("--noise-levels must not repeat a level "
                              f"(repeated: {', '.join(f'{v:g}' for v in repeated)})")
        if not self.alphas or not all(0 <= v < float("inf") for v in self.alphas):
            raise ConfigError(f"--alphas must be one or more finite numbers >= 0 (got {self.alphas})")
        if len(set(self.alphas)) != len(self.alphas):
            raise ConfigError(f"--alphas must not repeat a value (got {self.alphas})")
        if not 0 <= self.seed <= SEED_LIMIT - self.runs:
            raise ConfigError(f"--seed must be an integer with 0 <= seed and seed + runs <= 2^53 (got {self.seed} with "
                              f"{self.runs} runs)")
        if self.projection != "margin" and self.margin != Config.margin:
            raise ConfigError("--margin is only used with --projection margin")
        positive = {"learning_rate": self.learning_rate, "beta": self.beta, "margin": self.margin,
                    "tamade_tolerance": self.tamade_tolerance, "tamade_resolution": self.tamade_resolution}
        nonnegative = {"noise_sigma": self.noise_sigma, "initial_permut": self.initial_permut, "alpha": self.alpha,
                       "rho": self.rho, "prune_threshold": self.prune_threshold}
        at_least = {"runs": (self.runs, 1), "dataset_size": (self.dataset_size, 1),
                    "test_set_size": (self.test_set_size, 1),
                    "epochs": (self.epochs, 0), "projection_frequency": (self.projection_frequency, 0),
                    "align_every": (self.align_every, 0), "align_budget": (self.align_budget, 0),
                    "finetune_epochs": (self.finetune_epochs, 0), "min_epochs": (self.min_epochs, 0),
                    "finetune_min_epochs": (self.finetune_min_epochs, 0),
                    "smoothing_window": (self.smoothing_window, 5)}
        for name, value in positive.items():
            if not value > 0 or value != value or value == float("inf"):
                raise ConfigError(f"{flag(name)} must be a finite number > 0 (got {value})")
        for name, value in nonnegative.items():
            if not value >= 0 or value == float("inf"):
                raise ConfigError(f"{flag(name)} must be a finite number >= 0 (got {value})")
        for name, (value, low) in at_least.items():
            if value < low:
                raise ConfigError(f"{flag(name)} must be an integer >= {low} (got {value})")
        if self.min_epochs > self.epochs or self.finetune_min_epochs > self.finetune_epochs:
            if "min_epochs" in spec.fields:  # the kinds that stop on validation
                raise ConfigError(f"--min-epochs ({self.min_epochs}) must be at most --epochs ({self.epochs}), and "
                                  f"--finetune-min-epochs ({self.finetune_min_epochs}) at most --finetune-epochs "
                                  f"({self.finetune_epochs})")
        trained = rule(self.train)
        if trained.blocks > 1 and not spec.rule_state:
            raise ConfigError(f"--train {self.train} trains per-parameter state beside theta: only the kinds "
                              f"{', '.join(registry.kinds_with('rule_state'))} run it")
        if trained.needs and self.optimizer not in trained.needs:
            raise ConfigError(f"--train {self.train} needs --optimizer {' or '.join(trained.needs)} (got "
                              f"{self.optimizer})")
        if self.finetune_epochs and not self.prune_threshold and self.prune_method == "threshold" and (
                "prune_threshold" in spec.fields):
            raise ConfigError("--finetune-epochs trains a pruned student: it needs --prune-threshold > 0")
        for name in spec.required:
            if not getattr(self, name) >= 1:
                raise ConfigError(f"the {self.experiment} experiment needs {flag(name)} >= 1 "
                                  f"(got {getattr(self, name)})")

    def replace(self, **fields) -> Config:
        """A copy with ``fields`` changed (validated like a new config), e.g. ``presets["A"].replace(runs=3)``.
        A student that has the teacher's widths keeps following them when ``teacher_dims`` changes."""
        unknown = set(fields) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(sorted(unknown))}")
        if self.student_dims == self.teacher_dims:
            fields.setdefault("student_dims", None)
        return dataclasses.replace(self, **fields)

    # ---- identity -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists), less the fields ``omitted_at_default`` that hold their
        default."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if not (f.metadata.get("omitted_at_default") and getattr(self, f.name) == f.default)}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def config_hash(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON of all fields and ``NUMERICS_VERSION``: the
        store key."""
        canonical = json.dumps({**self.to_dict(), "numerics": NUMERICS_VERSION}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def changed_fields(self) -> dict[str, Any]:
        """Fields whose value differs from the default, in declaration order (``experiment`` excluded;
        ``student_dims`` only when it differs from ``teacher_dims``)."""
        default = Config(experiment=self.experiment)
        changed = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "experiment" and getattr(self, f.name) != getattr(default, f.name)
        }
        if self.student_dims == self.teacher_dims:
            changed.pop("student_dims", None)
        return changed

    def changed_text(self) -> dict[str, str]:
        """``changed_fields`` that change a number (not ``described=False``) with each value rendered
        compactly: ``0.01``, ``2,25,25,1``, and a noise grid as ``1e-05-0.99x25`` (lowest-highest x count)."""
        def render(name, value):
            if name == "noise_levels":
                return f"{min(value):g}-{max(value):g}x{len(value)}"
            if isinstance(value, tuple):
                return ",".join(map(str, value))
            return f"{value:g}" if isinstance(value, float) else str(value)

        described = {f.name for f in dataclasses.fields(self) if f.metadata.get("described", True)}
        return {name: render(name, value) for name, value in self.changed_fields().items() if name in described}

    def describe(self, skip: tuple[str, ...] = ()) -> str:
        """The non-default fields (less those in ``skip``) as ``name=value, ...``, or ``defaults``."""
        return ", ".join(f"{k}={v}" for k, v in self.changed_text().items() if k not in skip) or "defaults"

    def figure_stem(self) -> str:
        """File-name stem carrying every parameter that differs from its default, e.g.
        ``epoch_noise-sigma=0_initial-permut=0.01_train=drr``; beyond ``STEM_BYTES`` it is cut at a whole
        parameter and ends in ``_cfg-`` and 8 digits of ``config_hash``."""
        parts = [self.experiment] + [f"{option(k)}={v}" for k, v in self.changed_text().items()]
        stem = "_".join(parts)
        if len(stem.encode()) <= STEM_BYTES:
            return stem
        described = self.replace(**{f.name: f.default for f in dataclasses.fields(self)
                                    if not f.metadata.get("described", True)})  # how it is kept names nothing
        tail = f"_cfg-{described.config_hash()[:8]}"
        while len(parts) > 1 and len(("_".join(parts) + tail).encode()) > STEM_BYTES:
            parts.pop()
        return "_".join(parts) + tail


def alpha_of(config: Config, alpha):
    """The strength α (a number or an array) as the rules use it: per training sample (divided by the dataset
    size) under ``alpha_scale`` per-sample, else as given."""
    return alpha / config.dataset_size if config.alpha_scale == "per-sample" else alpha


KIND_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata.get("per_kind"))
"""Fields that only some experiment kinds use (``KindSpec.fields``); the others keep their defaults."""

TRACED = ("learning_rate", "noise_sigma", "alpha", "beta", "rho", "seed", "initial_permut", "runs")
"""Fields that the training program takes as values, not as part of its shape: configs that differ only in
these train as one batch of one compiled program."""


def pack_key(config: Config) -> str:
    """Equal for configs that can train as one batch (they differ in ``TRACED`` fields only)."""
    return json.dumps({k: v for k, v in config.to_dict().items() if k not in TRACED}, sort_keys=True)


def option(name: str) -> str:
    """A config field in option spelling: ``learning_rate`` -> ``learning-rate``."""
    return name.replace("_", "-")


def flag(name: str) -> str:
    """CLI option of a config field: ``learning_rate`` -> ``--learning-rate``."""
    return "--" + option(name)


PRESETS: dict[str, dict[str, Any]] = {
    # Experiment A of the Julia original: perturbed start, clean data, its script's DRR rule, plain GD.
    "A": {"experiment": "epoch", "initial_permut": 1e-2, "noise_sigma": 0.0, "train": "drr", "alpha": 1e-4,
          "beta": 10.0, "rho": 0.0, "optimizer": "gd", "learning_rate": 1e-2},
    # Experiment B of the Julia original: exact start, noisy labels, vanilla GD.
    "B": {"experiment": "epoch", "initial_permut": 0.0, "noise_sigma": 1e-3, "train": "vanilla", "optimizer": "gd"},
    # Experiment C on the table in the README of ℓ₂-Experiments (the Julia original): eta = 1e-2, 500 epochs
    # (the defaults).
    "C": {"experiment": "noise"},
    # Experiment C as the original noise script sets it: eta = 1e-3, 100 epochs.
    "C-script": {"experiment": "noise", "learning_rate": 1e-3, "epochs": 100},
    # The set-ups of the three published figures of ℓ₂-Experiments, as their embedded titles and the scripts
    # they were made with give them (plain GD throughout, 20 runs, Julia's default float32); the README says
    # how each was inferred and how close it comes.
    "seed-A": {"experiment": "epoch", "initial_permut": 1e-6, "perturbation": "normal", "noise_sigma": 0.0,
               "train": "vanilla", "optimizer": "gd", "runs": 20, "dtype": "float32"},
    "seed-B": {"experiment": "epoch", "initial_permut": 0.0, "noise_sigma": 1e-3, "train": "vanilla", "optimizer": "gd",
               "runs": 20, "dtype": "float32"},
    "seed-C": {"experiment": "noise", "learning_rate": 1e-5, "epochs": 100, "runs": 20, "dtype": "float32"},
    # The compression experiment of the Julia original: a narrow teacher padded into a wide fresh student, trained
    # under DRR with Adam (the teacher projected onto F, the student never), then pruned at |theta| < 1e-3.
    "D": {"experiment": "compress", "teacher_dims": (2, 10, 5, 1), "student_dims": (2, 25, 25, 1),
          "student_init": "random", "optimizer": "adam", "learning_rate": 1e-2, "train": "drr", "alpha": 0.1,
          "beta": 10.0, "rho": 0.0, "noise_sigma": 1e-3, "epochs": 5000, "projection_frequency": 0,
          "align_every": 500, "prune_threshold": 1e-3},
    # The compression study behind the paper of ℓ₂-Experiments, set up as its published study script: one
    # teacher 2,5,8,1 (Lux's initialisation, first-layer weights 2W + 1, second 2W), fresh 2,25,25,1 students,
    # 300 noisy samples, Adam 1e-3, DRR with beta 5 and alpha per training sample, no per-layer factors,
    # validation-based stopping, pruning by search and plain fine-tuning.
    "paper-compress": {"experiment": "procedure", "teacher_dims": (2, 5, 8, 1), "student_dims": (2, 25, 25, 1),
                       "noise_sigma": 0.08, "dataset_size": 300, "validation_set_size": 5000, "test_set_size": 10_000,
                       "optimizer": "adam", "learning_rate": 1e-3, "train": "drr", "beta": 5.0, "rho": 0.0,
                       "alpha_scale": "per-sample", "layer_factors": "off", "alphas": PAPER_ALPHAS, "runs": 10,
                       "epochs": 20_000, "min_epochs": 1500, "finetune_epochs": 10_000, "finetune_min_epochs": 33,
                       "finetune_train": "vanilla"},
}
"""Named set-ups as the fields they set (``--preset NAME`` on the command of their experiment); explicit
options override them."""

presets: MappingProxyType[str, Config] = MappingProxyType({name: Config(**fields) for name, fields in PRESETS.items()})
"""The named set-ups as configs: ``presets["A"].replace(runs=3)``."""


def example(kind: str) -> Config:
    """The small example config of the experiment kind ``kind`` (``KindSpec.example``): runs in seconds."""
    return Config(experiment=kind, **registry.kind(kind).example)


def build(config: Config | None = None, preset: str | None = None, **fields) -> Config:
    """The config that ``config`` or the preset ``preset`` (at most one; neither: the defaults) gives with
    ``fields`` changed."""
    if config is not None and preset is not None:
        raise ConfigError("give a config or a preset, not both")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)} (got {preset!r})")
    base = config if config is not None else presets[preset] if preset is not None else Config()
    return base.replace(**fields)
