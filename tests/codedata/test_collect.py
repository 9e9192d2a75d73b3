"""Collection from git repositories and from datasets in The Stack's shape."""
import collections
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from codedata_helpers import MIT, git, module_text, read_rows, run

from codejax.codedata import collect

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("git") / "myrepo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "LICENSE").write_text(MIT)
    (root / "pkg").mkdir()
    (root / "pkg" / "a.py").write_text(module_text("alpha"))
    (root / "pkg" / "b.py").write_text(module_text("beta"))
    (root / "tests").mkdir()
    (root / "tests" / "test_a.py").write_text(module_text("gamma"))
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    (root / "pkg" / "a.py").write_text(module_text("alpha", 13))
    git(root, "commit", "-q", "-am", "second")
    (root / "pkg" / "untracked.py").write_text(module_text("delta"))  # not in git: not collected
    return root


def test_git_repo_lists_tracked_files_with_commit_counts(repo):
    stats = collections.Counter()
    refs = list(collect.iter_refs(str(repo), ["python"], include_tests=True, stats=stats))
    by_path = {r["path"]: r for r in refs}
    assert sorted(by_path) == ["LICENSE", "pkg/a.py", "pkg/b.py", "tests/test_a.py"]
    assert by_path["pkg/a.py"]["meta"] == {"license_file": "LICENSE", "commit_count": 2, "file_commits": 2}
    assert by_path["pkg/b.py"]["meta"]["file_commits"] == 1
    assert all(r["repo"] == "myrepo" and r["license"] == "MIT" for r in refs)
    assert not stats
    without_tests = list(collect.iter_refs(str(repo), ["python"], include_tests=False, stats=stats))
    assert "tests/test_a.py" not in {r["path"] for r in without_tests}


def test_a_broken_git_dir_falls_back_to_walking(tmp_path):
    root = tmp_path / "fake"
    (root / ".git").mkdir(parents=True)  # not a repository
    (root / "x.py").write_text("x = 1\n")
    stats = collections.Counter()
    refs = list(collect.iter_refs(str(root), ["python"], include_tests=True, stats=stats))
    assert [r["path"] for r in refs] == ["x.py"] and stats["collect/git_fallback"] == 1


def test_the_pipeline_reads_a_git_repo(repo, tmp_path):
    summary = run(tmp_path, str(repo), split_by="repo", eval_fraction=0.0)
    assert summary["files_kept"] == 3
    assert sorted(r["path"] for r in read_rows(tmp_path, "train")) == ["pkg/a.py", "pkg/b.py", "tests/test_a.py"]


STACK_ROWS = [
    {"content": module_text("alpha"), "path": "src/a.py", "repo": "org/one", "license": "MIT"},
    {"content": module_text("beta"), "max_stars_repo_path": "lib/b.py", "max_stars_repo_name": "org/two",
     "max_stars_repo_licenses": ["Apache-2.0", "MIT"], "lang": "Python", "max_stars_count": 5},
    {"content": module_text("gamma"), "path": "c.py", "repo": "org/three", "license": "GPL-3.0"},
    {"path": "nocontent.py", "repo": "org/four", "license": "MIT"},
    {"content": module_text("delta"), "max_stars_repo_path": "d.py", "max_stars_repo_name": "org/five",
     "max_stars_repo_licenses": ["MIT", "AGPL-3.0"]},
]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_datasets_in_the_stacks_shape(kind, tmp_path):
    path = tmp_path / f"stack.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in STACK_ROWS) + "{not json\n")
    else:
        columns = {k: None for row in STACK_ROWS for k in row}
        pq.write_table(pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in STACK_ROWS]), path)
    stats = collections.Counter()
    refs = list(collect.iter_refs(str(path), ["python"], True, stats))
    assert refs[1]["repo"] == "org/two" and refs[1]["path"] == "lib/b.py"
    assert refs[1]["license"] == "Apache-2.0 AND MIT" and refs[1]["language"] == "python"
    assert refs[1]["meta"] == {"max_stars_count": 5}
    summary = run(tmp_path / "out", str(path), split_by="repo", eval_fraction=0.0)
    expected = {"license/GPL-3.0": 1, "license/MIT AND AGPL-3.0": 1, "read/bad_row": 1}
    if kind == "jsonl":
        expected["read/bad_row"] = 2  # + the line that is not JSON
    assert summary["dropped"] == expected
    rows = read_rows(tmp_path / "out", "train")
    assert sorted((r["repo"], r["path"]) for r in rows) == [("org/one", "src/a.py"), ("org/two", "lib/b.py")]
