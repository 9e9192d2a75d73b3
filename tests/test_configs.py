"""Every config file builds, its variants build, and misspelled fields are errors that name them."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from codejax.config import base_config, load_config_file
from codejax.jobs import _JOB_MODULES

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.py"))


def _variants(path: Path) -> list[str]:
    """A file's VARIANTS list, or the literal list in its `unknown_variant(__file__, arg, [...])` call."""
    spec = importlib.util.spec_from_file_location(f"_variants_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "VARIANTS"):
        return list(module.VARIANTS)
    text = path.read_text()
    start = text.index("unknown_variant(__file__, arg, ") + len("unknown_variant(__file__, arg, ")
    return eval(text[start:text.index(")", start)])  # noqa: S307 - a literal list in our own file


def test_there_are_configs():
    assert {p.stem for p in CONFIG_FILES} >= {"sft", "pretrain", "quickstart"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_builds_every_variant(path):
    base_keys = set(base_config().to_dict())
    for variant in _variants(path):
        config = load_config_file(f"{path}:{variant}" if variant else str(path))
        assert set(config.to_dict()) == base_keys, "configs may only set fields of the base schema"
        assert config.job in _JOB_MODULES
        assert config.train.steps > 0
    with pytest.raises(ValueError, match="unknown config variant"):
        load_config_file(f"{path}:no_such_variant")


def test_misspelled_field_in_code_is_named():
    config = base_config()
    with pytest.raises(AttributeError, match="lrr"):
        config.optim.lrr = 1.0


def test_misspelled_override_on_the_command_line_is_named(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "codejax.main", f"--config={ROOT / 'configs' / 'sft.py'}:tiny",
         f"--workdir={tmp_path}", "--config.optim.lrr=3e-5"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert "lrr" in result.stderr


def test_unknown_job_is_named():
    from codejax.jobs import get_job
    with pytest.raises(ValueError, match="no_such_job"):
        get_job("no_such_job")
