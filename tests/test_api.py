"""The importable library: a good guest in the caller's JAX, ``run``/``load``/``Result`` and presets (the
battery over every registered experiment kind is ``test_kinds``)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import TINY, heavy_modules_after

import l2rebound
from l2rebound.config import ConfigError, presets

# What a user's JAX looks like: default dtype, devices, random bits, and an exported program that draws
# random numbers. Printed as JSON by a fresh interpreter, with or without l2rebound imported and used.
JAX_STATE = """
import hashlib, json, sys
{prelude}
import jax, jax.numpy as jnp
key = jax.random.PRNGKey(0)
exported = jax.export.export(jax.jit(lambda k: jax.random.normal(k, (3,))))(key)
print(json.dumps({{
    "x64": bool(jax.config.jax_enable_x64), "dtype": str(jnp.zeros(1).dtype), "devices": jax.device_count(),
    "uniform": jax.random.uniform(key, (3,)).tolist(), "normal": exported.call(key).tolist(),
    "exported": hashlib.sha256(exported.mlir_module_serialized).hexdigest(),
    "threefry_in_module": "threefry" in exported.mlir_module(),
}}))
"""


def jax_state(*prelude: str) -> dict:
    """The state after the statements ``prelude``, kept on one line so that the exported program's source
    locations do not move."""
    script = JAX_STATE.format(prelude="; ".join(prelude) or "pass")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_and_running_changes_no_jax_state():
    clean = jax_state()
    used = jax_state("import l2rebound",
                     "l2rebound.run(teacher_dims=(2, 4, 1), dataset_size=64, test_set_size=16, epochs=3, runs=3, "
                     "initial_permut=1e-2, progress=False)",
                     "l2rebound.run(preset='C', teacher_dims=(2, 3, 1), dataset_size=32, test_set_size=8, epochs=2, "
                     "runs=1, noise_levels=(1e-2, 1e-1), progress=False)")
    assert clean["x64"] is False and clean["dtype"] == "float32" and clean["threefry_in_module"]
    assert used == clean  # bit-identical draws, the same exported program, device count and dtype


def test_importing_the_package_or_its_cli_loads_no_engine():
    assert heavy_modules_after("import l2rebound, l2rebound.cli; l2rebound.cli.build_parser()") == []


def test_run_builds_the_config_from_a_preset_and_fields(monkeypatch):
    seen = []
    monkeypatch.setattr(l2rebound.api, "compute", lambda config, **kwargs: seen.append(config) or config)
    l2rebound.run(preset="A", runs=3, progress=False)
    l2rebound.run(presets["B"], epochs=7, progress=False)
    l2rebound.run(runs=2, progress=False)
    assert seen == [presets["A"].replace(runs=3), presets["B"].replace(epochs=7), l2rebound.Config(runs=2)]
    assert seen[0].train == "drr" and seen[0].experiment == "epoch"


@pytest.mark.parametrize("call, message", [
    (lambda: l2rebound.run(runs=0), "--runs must be an integer >= 1"),
    (lambda: l2rebound.run(learning_rate=-1.0), "--learning-rate must be a finite number > 0"),
    (lambda: l2rebound.run(learnig_rate=0.1), "unknown config fields: learnig_rate"),
    (lambda: l2rebound.run(preset="Z"), "--preset must be one of A, B, C, C-script"),
    (lambda: l2rebound.run(presets["A"], preset="A"), "a config or a preset, not both"),
])
def test_bad_input_is_a_config_error_naming_the_option(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_presets_are_read_only_configs_and_replace_follows_the_teacher():
    assert set(presets) == {"A", "B", "C", "C-script", "seed-A", "seed-B", "seed-C", "D", "paper-compress"}
    assert presets["C-script"].experiment == "noise" and presets["C-script"].learning_rate == 1e-3
    assert presets["C-script"].epochs == 100 and presets["C"] == l2rebound.Config(experiment="noise")
    with pytest.raises(TypeError):
        presets["A"] = l2rebound.Config()
    narrow = presets["A"].replace(teacher_dims=(2, 5, 1))
    assert narrow.student_dims == (2, 5, 1)  # the student keeps the teacher's widths
    wide = l2rebound.Config(teacher_dims=(2, 3, 1), student_dims=(2, 6, 1)).replace(runs=2)
    assert wide.student_dims == (2, 6, 1)


def test_run_with_a_store_reuses_the_result_without_training(tmp_path, monkeypatch):
    first = l2rebound.run(TINY, out=tmp_path, progress=False)
    monkeypatch.setattr(l2rebound.api, "compute", lambda *a, **k: pytest.fail("trained a stored config again"))
    again = l2rebound.run(TINY, out=tmp_path, progress=False)
    pd.testing.assert_frame_equal(again.frame(), first.frame())
    assert again.manifest == first.manifest


def test_load_refuses_what_is_not_a_result(tmp_path):
    with pytest.raises(l2rebound.StoreError, match="not a finished result folder"):
        l2rebound.load(tmp_path)


