"""The tutorial notebook runs from top to bottom, shows its figures and leaves no temporary folder behind."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


@pytest.mark.slow
def test_the_tutorial_runs_and_shows_its_figures(tmp_path, monkeypatch):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))  # the kernel's temporary folders: none may be left
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:  # run what a reader runs, not what was stored
        if cell.cell_type == "code":
            cell.outputs = []
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    # presets A and B, the theory, the noise experiment, the sweep's phase diagram, the compression's two
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 9
    text = "".join(output.get("text", "") for output in outputs)
    assert "SweepResult(" in text and "aligned ℓ₂ in [" in text and "support recovered" in text
    assert not list(temporary.iterdir())
