"""Every colab/*.ipynb runs top to bottom in a real Jupyter kernel, as it does on Colab.

nbclient executes each notebook (one test per notebook, so pytest-xdist spreads them) in an
ipykernel started from this interpreter: a kernel spec naming sys.executable is written into a
temporary JUPYTER_PATH, so no other Python on the machine can be picked up. The kernel's working
directory is a temporary one and CODEJAX_REPO names this checkout: codejax is importable there,
so each notebook's install cell installs nothing and its configs come from this checkout's configs/.
"""
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
KERNEL = "codejax-test-kernel"

# Text each notebook must print: its final checks cell, and a figure only a real run produces.
EXPECTED = {
    "code_data_pipeline.ipynb": ["checks passed: summary.json, report and shards", "files_kept"],
    "constitutional_ai.ipynb": ["checks passed: constitutional run, SFT, DPO and safety evals completed",
                                "-> a typo is an error"],
    "dpo.ipynb": ["checks passed: summary.json completed, DPO started at log 2", "step    0: eval/loss 0.6931"],
    "eval_pass_at_k.ipynb": ["checks passed: pass@k of known answers", "'pass@1': 0.5, 'pass@2': 1.0"],
    "grpo_execution_rewards.ipynb": ["checks passed: summary.json completed, execution rewards logged",
                                     "reward of the right answer 1.0"],
    "models_quickstart.ipynb": ["checks passed: load_hf, transformers parity", "GFLOP/token"],
    "synth_data.ipynb": ["checks passed: OSS-Instruct run, verification and SFT completed",
                         "prints_pass  kept=False reason=tests_failed"],
    "tool_use.ipynb": ["checks passed: SFT and GRPO with tools completed", "the python tool replied '1363'"],
    "sft_lora_peft.ipynb": ["checks passed: summary.json completed, the adapter loads in peft",
                            "max |codejax - peft|"],
}
PROBE = "import sys; print('kernel python:', sys.executable)"


@pytest.fixture(scope="session")
def jupyter_path(tmp_path_factory):
    """A JUPYTER_PATH whose only kernel spec runs ipykernel on this interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "codejax tests", "language": "python"}))
    return str(root)


def _kernel_env() -> dict:
    env = dict(os.environ)
    env["CODEJAX_REPO"] = str(ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    # One CPU device, as on a Colab CPU runtime: conftest's 8 fake devices are for the sharding tests.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count"))
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as in a notebook
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # debugpy's frozen-modules note on stderr
    return env


def _output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_every_notebook_has_expected_output_listed():
    assert NOTEBOOKS, "no notebooks in colab/"
    assert sorted(EXPECTED) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_clean_and_has_the_standard_cells(path):
    """Committed without outputs (clean diffs), with the install, runtime-check and checks cells."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = ["".join(c.source) for c in nb.cells if c.cell_type == "code"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert any("CODEJAX_REPO" in s and "pip_install(" in s and "git+" in s for s in code), "no install cell"
    assert any("jax.default_backend()" in s and "jax.device_count()" in s for s in code), "no runtime check"
    assert "assert " in code[-1] and "checks passed" in code[-1], "the last cell should check the outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, jupyter_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", jupyter_path)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=_kernel_env())  # raises CellExecutionError, with the traceback, at a failing cell

    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out["output_type"] == "error"]
    assert not errors, errors
    text = "".join(_output_text(c) for c in nb.cells if c.cell_type == "code")
    assert f"kernel python: {sys.executable}" in text
    for expected in EXPECTED[path.name]:
        assert expected in text, f"{path.name}: {expected!r} not in the output"
