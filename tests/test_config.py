"""The frozen config: validation, identity (hash) and names."""

import dataclasses
import re

import pytest

from l2rebound.config import PRESETS, Config, ConfigError


def test_defaults_are_the_seed_table():
    c = Config()
    assert (c.learning_rate, c.noise_sigma, c.initial_permut, c.seed, c.epochs, c.runs) == (
        1e-2, 1e-3, 0.0, 42, 500, 10)
    assert (c.dataset_size, c.test_set_size, c.projection_frequency) == (10_000, 1_000, 1)
    assert c.teacher_dims == (2, 25, 25, 1) == c.student_dims and c.train == "vanilla"


def test_hash_is_stable_and_sensitive():
    assert Config().config_hash() == Config().config_hash()
    assert Config(student_dims=(2, 25, 25, 1)).config_hash() == Config().config_hash()
    assert Config(noise_sigma=0).config_hash() == Config(noise_sigma=0.0).config_hash()
    hashes = {Config(seed=s).config_hash() for s in range(20)}
    assert len(hashes) == 20
    assert Config(learning_rate=2e-2).config_hash() != Config().config_hash()


def test_round_trip_through_dict():
    c = Config(student_dims=(2, 30, 25, 1), train="drr", dtype="float32")
    assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown"):
        Config.from_dict({**c.to_dict(), "bogus": 1})


def test_figure_stem_names_every_changed_field():
    assert Config().figure_stem() == "epoch"
    stem = Config(**PRESETS["A"]).figure_stem()
    assert stem == "epoch_noise-sigma=0_initial-permut=0.01_train=drr"
    assert "teacher-dims=2,5,1" in Config(teacher_dims=(2, 5, 1)).figure_stem()


@pytest.mark.parametrize("changes, option", [
    ({"learning_rate": 0}, "--learning-rate"), ({"learning_rate": float("nan")}, "--learning-rate"),
    ({"noise_sigma": -1e-3}, "--noise-sigma"), ({"initial_permut": -1}, "--initial-permut"),
    ({"teacher_dims": (2, 1)}, "--teacher-dims"), ({"teacher_dims": (2, 0, 1)}, "--teacher-dims"),
    ({"student_dims": (2, 24, 25, 1)}, "--student-dims"), ({"student_dims": (3, 25, 25, 1)}, "--student-dims"),
    ({"dataset_size": 0}, "--dataset-size"), ({"test_set_size": 0}, "--test-set-size"), ({"runs": 0}, "--runs"),
    ({"epochs": -1}, "--epochs"), ({"train": "l0"}, "--train"), ({"optimizer": "sgd"}, "--optimizer"),
    ({"runs": 2.5}, "--runs"), ({"beta": 0}, "--beta"), ({"projection_frequency": -1}, "--projection-frequency"),
])
def test_bad_values_name_their_option(changes, option):
    with pytest.raises(ConfigError, match=option):
        Config(**changes)


def test_presets_are_valid_and_frozen():
    for preset in PRESETS.values():
        c = Config(**preset)
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.seed = 1


@pytest.mark.parametrize("changes, message", [
    ({"runs": "3"}, "--runs must be an integer, not str (got '3')"),
    ({"runs": None}, "--runs must be an integer, not NoneType"),
    ({"runs": True}, "--runs must be an integer, not bool"),
    ({"learning_rate": "1e-2"}, "--learning-rate must be a number, not str"),
    ({"runs": 2.5}, "--runs must be an integer (got 2.5)"),
    ({"runs": float("inf")}, "--runs must be an integer (got inf)"),
    ({"seed": 2**64}, "--seed must be an integer below 2^62 in size"),
    ({"runs": 10**400}, "--runs must be an integer below 2^62 in size"),  # too large for a float
    ({"teacher_dims": "2,4,1"}, "--teacher-dims must be a sequence of integer layer widths"),
    ({"teacher_dims": (2, 4.5, 1)}, "--teacher-dims must be a sequence of integer layer widths"),
    ({"noise_levels": 1e-3, "experiment": "noise"}, "--noise-levels must be a sequence of numbers"),
])
def test_a_value_of_the_wrong_type_is_named_as_such(changes, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        Config(**changes)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        Config(**PRESETS["A"]).replace(**changes)


def test_numpy_numbers_are_numbers():
    import numpy as np

    config = Config(runs=np.int64(3), learning_rate=np.float32(0.5), teacher_dims=[2, np.int64(5), 1])
    assert (config.runs, config.learning_rate, config.teacher_dims) == (3, 0.5, (2, 5, 1))
    assert type(config.runs) is int and all(type(d) is int for d in config.teacher_dims)
    assert config.config_hash() == Config(runs=3, learning_rate=0.5, teacher_dims=(2, 5, 1)).config_hash()


def test_figure_file_names_stay_short():
    """Every figure's file name, the longest view and extension included, within 120 characters."""
    from l2rebound.config import presets

    crowded = Config(teacher_dims=(2, *[3] * 19, 1), learning_rate=0.0123456789, noise_sigma=0.000123456789,
                     initial_permut=0.0314159265, alpha=0.000271828, beta=12.3456789, train="drr", optimizer="adam")
    for config in [*presets.values(), crowded]:
        name = f"{config.figure_stem()}_normalised_l2sq.png"
        assert len(name.encode()) <= 120, name
    assert crowded.figure_stem().endswith(f"_cfg-{crowded.config_hash()[:8]}")


def test_the_align_budget_help_names_the_futile_share():
    from l2rebound.certify import FUTILE_SHARE

    assert f"{FUTILE_SHARE:.0%} of the gap" in Config.__dataclass_fields__["align_budget"].metadata["help"]


def test_how_a_result_is_kept_names_no_figure_and_is_no_grid_axis():
    from l2rebound.grid import make_axis

    full = Config(**PRESETS["A"])
    compact = full.replace(storage="compact")
    assert compact.figure_stem() == full.figure_stem() and compact.describe() == full.describe()
    crowded = full.replace(learning_rate=0.0123, alpha=0.0456, beta=0.789, rho=0.0321, seed=12345, runs=7,
                           epochs=123, dataset_size=4321, test_set_size=321, initial_permut=0.0234)
    assert crowded.figure_stem().rsplit("_cfg-", 1)[1]  # cut, and ended by a hash
    assert crowded.replace(storage="compact").figure_stem() == crowded.figure_stem()
    assert compact.config_hash() != full.config_hash()  # but its own folder
    with pytest.raises(ConfigError, match="--grid storage: .* one choice for the whole sweep"):
        make_axis("storage", ["full", "compact"])
