"""A package adds an experiment kind and a training rule without editing l2rebound: the example plugin
(``tests/example_plugin``: the ``relabelled`` kind and the ``ridge`` rule, registered by its entry points)
runs through the command line, the Python API, a sweep and the store; the shared batteries (``test_kinds``,
``test_rules``) cover it like the built-in members."""

import tomllib

import numpy as np
import pytest
from conftest import EXAMPLE_PLUGIN, heavy_modules_after, run_cli

import l2rebound
from l2rebound import registry
from l2rebound.config import ConfigError, example
from l2rebound.rules import all_rules


def test_the_plugin_is_found_through_its_entry_points():
    points = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]
    assert set(points[registry.KIND_GROUP]) <= set(registry.kind_names())
    assert set(points[registry.RULE_GROUP]) <= set(all_rules())
    spec = registry.kind("relabelled")
    assert spec.sweepable and spec.curves and not spec.theory
    assert "relabelled" in l2rebound.kinds() and all_rules()["ridge"].oracle is not None


def test_naming_the_plugin_loads_no_engine():
    assert heavy_modules_after("import l2rebound; l2rebound.Config(experiment='relabelled', train='ridge')") == []


def test_a_relabelled_start_trains_as_its_relabelling(tmp_path):
    """Gradient descent commutes with relabelling the hidden units: with the projection off, the relabelled
    students' aligned distances follow the epoch experiment's, while their raw distances stay far."""
    config = example("relabelled").replace(projection="off", epochs=20, align_every=5, train="ridge", alpha=1e-3)
    relabelled = l2rebound.run(config, progress=False)
    plain = l2rebound.run(config.replace(experiment="epoch"), progress=False)
    kept = relabelled.kept_epochs
    np.testing.assert_allclose(relabelled.metrics["l2_aligned"][:, kept], plain.metrics["l2_aligned"][:, kept],
                               rtol=1e-10)
    np.testing.assert_allclose(relabelled.metrics["train_loss"], plain.metrics["train_loss"], rtol=1e-10)
    assert np.all(relabelled.metrics["l2"] > 10 * plain.metrics["l2"])


def test_the_plugin_runs_through_the_command_line_and_is_refused_where_it_cannot_go(tmp_path):
    code, out, err = run_cli("relabelled", "--teacher-dims", "2,4,1", "--dataset-size", "64", "--test-set-size", "16",
                             "--epochs", "5", "--runs", "2", "--initial-permut", "1e-2", "--train", "ridge",
                             "--alpha", "1e-3", "--out", tmp_path, "--no-progress")
    assert code == 0, err
    folder = next(tmp_path.glob("relabelled-*"))
    assert (folder / "metrics.csv").is_file() and list(folder.glob("*_absolute.png"))
    assert "final aligned ℓ₂" in out
    assert run_cli("plot", folder)[0] == 0
    assert run_cli("align", folder)[0] == 0
    code, _, err = run_cli("analyze", folder)
    assert code == 2 and "does not model the relabelled experiment" in err and "Traceback" not in err
    code, _, err = run_cli("relabelled", "--align-every", "0", "--out", tmp_path)
    assert code == 2 and "needs --align-every >= 1" in err


def test_the_plugin_kind_and_rule_run_in_a_sweep(tmp_path):
    sweep = l2rebound.sweep(example("relabelled").replace(train="ridge"), {"alpha": [1e-4, 1e-2]}, out=tmp_path,
                            progress=False)
    frame = sweep.frame()
    assert len(frame) == 2 * 2 and set(frame.alpha) == {1e-4, 1e-2}
    assert np.isfinite(frame.l2_aligned_final).all()
    for cell in sweep.hashes:
        assert (tmp_path / f"relabelled-{cell}" / "config.json").is_file()


def test_a_rule_that_reads_no_beta_refuses_a_sweep_over_it(tmp_path):
    with pytest.raises(ConfigError, match="beta"):
        l2rebound.sweep(example("epoch").replace(train="ridge"), {"beta": [1.0, 2.0]}, out=tmp_path, progress=False)
