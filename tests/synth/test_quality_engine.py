"""Every quality-control stage on crafted items, the review file round trip, and the engine's run:
outputs SFT reads, counts that add up, resume from the cache, review verdicts applied."""
import csv
import json

import pytest

from codejax.config import base_config
from codejax.evaluation import load_benchmark
from codejax.synth import BACKENDS, Item, read_review, run_quality, run_synth
from codejax.synth.quality import QCEnv
from codejax.synth.review import export_review

from synth_helpers import ScriptedTeacher, make_ctx

GOOD = "def add(a, b):\n    return a + b"
TESTS = "assert add(2, 3) == 5\nassert add(0, 0) == 0"


def _item(instruction="Write `add(a, b)` returning the sum of two numbers.", solution=GOOD, tests=TESTS, method="m"):
    return Item(method, instruction, solution, tests)


def _env(tmp_path, **overrides):
    ctx, _ = make_ctx(tmp_path, **overrides)
    return QCEnv(ctx, ctx.settings, base_config())


def test_each_stage_drops_what_it_should(tmp_path):
    humaneval = load_benchmark("humaneval").problems[0]
    items = {
        "good": _item(),
        "no_solution": _item(solution=""),
        "syntax": _item(solution="def add(a, b) return a + b"),
        "short": _item(instruction="Add."),
        "not_prose": _item(instruction="x = [1, 2]; y = {3: 4}; z = (5,) # 6 7 8 9 0 ==== ++++ ----"),
        "refusal": _item(instruction="I'm sorry, but as an AI I cannot write `add` for you today."),
        "exact_dup": _item(instruction="write `ADD(a, b)`   returning the sum of two numbers."),
        "contaminated": _item(instruction="Complete this function as described in its docstring please.",
                              solution=humaneval.prompt + humaneval.reference),
        "undefined": _item(instruction="Write `add2(a, b)` that adds two numbers together.",
                           solution="def add(a, b):\n    return a + c"),
        "shell": _item(instruction="Write `run(cmd)` that runs a shell command for the user.",
                       solution="import subprocess\ndef add(a, b):\n    return subprocess.call(a, shell=True)"),
        "fails": _item(instruction="Write `add(a, b)` but the answer is wrong in this one.",
                       solution="def add(a, b):\n    return a * b"),
    }
    kept, dropped, counts = run_quality(list(items.values()), _env(tmp_path))
    why = {next(k for k, v in items.items() if v is it): (stage, reason) for it, stage, reason in dropped}
    assert [it for it in kept] == [items["good"]]
    assert why == {
        "no_solution": ("parse", "no_solution"), "syntax": ("parse", "syntax_error"),
        "short": ("filters", "too_short"), "not_prose": ("filters", "instruction_not_prose"),
        "refusal": ("filters", "refusal"), "exact_dup": ("dedup", "exact"),
        "contaminated": ("decontam", "contaminated"), "undefined": ("static", "lint:UndefinedName"),
        "shell": ("static", "security:B602"), "fails": ("execution", "tests_failed"),
    }
    # counts: every stage's in = out + dropped, and each stage starts from the last one's out
    c = counts["m"]
    assert c["parse"]["in"] == len(items) and c["review"]["out"] == 1
    for a, b in zip(list(c)[:-1], list(c)[1:]):
        assert c[a]["out"] == c[b]["in"] == c[a]["in"] - sum(c[a]["dropped"].values())


def test_near_duplicates_and_judge(tmp_path):
    a = _item(instruction="Write `add(a, b)` returning the sum of the two numbers a and b, for any integers.")
    b = _item(instruction="Write `add(a, b)` returning the sum of the two numbers a and b, for any integers, exactly.")
    kept, dropped, _ = run_quality([a, b], _env(tmp_path, verify=False, lint=False, security_drop=""))
    assert kept == [a] and [(s, r) for _, s, r in dropped] == [("dedup", "near")]

    class Judge(ScriptedTeacher):
        def reply(self, p):
            return "Score: 9" if p.startswith("Rate") and "sum" in p else "Score: 2" if p.startswith("Rate") else "?"
    env = _env(tmp_path / "j", teacher=Judge(), judge=True, verify=False)
    good, bad = _item(), _item(instruction="Write `add(a, b)` that adds two numbers together quickly.")
    kept, dropped, _ = run_quality([good, bad], env)
    assert kept == [good] and dropped[0][1:] == ("score", "judge_low") and good.origin["judge_score"] == 9


def test_review_round_trip_and_errors(tmp_path):
    items = [_item(), _item(instruction="Write `add(a, b)` that adds two integers and returns them summed.")]
    jsonl, csv_path = export_review(items, str(tmp_path))
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["id"] for r in rows] == [it.id for it in items] and all(r["verdict"] == "" for r in rows)
    rows[1]["verdict"] = "reject"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    verdicts = read_review(csv_path)
    assert verdicts[items[1].id]["verdict"] == "reject" and verdicts[items[0].id]["verdict"] == ""
    env = _env(tmp_path, verify=False)
    env.review = {k: v["verdict"] for k, v in verdicts.items()}
    kept, dropped, _ = run_quality(items, env)
    assert kept == [items[0]] and dropped[0][1:] == ("review", "rejected")
    env.settings.review_required = True
    assert run_quality(items, env)[0] == []  # the unreviewed one goes too
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "verdict": "accept"}) + "\n" + json.dumps({"id": "y", "verdict": "maybe"}))
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'verdict' is 'maybe'"):
        read_review(str(bad))
    (tmp_path / "h.csv").write_text("name,verdict\nx,accept\n")
    with pytest.raises(ValueError, match=r"h.csv:1: the header must have the fields 'id' and 'verdict'"):
        read_review(str(tmp_path / "h.csv"))


@pytest.fixture
def scripted_backend():
    teachers = []

    def make(config):
        teachers.append(ScriptedTeacher())
        return teachers[-1]
    BACKENDS["scripted"] = make
    yield teachers
    del BACKENDS["scripted"]


def test_run_synth_outputs_resume_and_review(tmp_path, scripted_backend):
    import transformers

    from codejax.data.builtin import builtin_tokenizer_dir
    from codejax.data.errors import SkipPolicy
    from codejax.data.formats import FormatSpec
    from codejax.data.pipeline import load_examples

    config = base_config()
    config.job = "synth"
    s = config.synth
    s.backend, s.items_per_method, s.batch_size, s.mutants, s.evol_generations = "scripted", 6, 4, 2, 2
    s.methods = "self_instruct,evol_instruct,oss_instruct,backtranslation,diversify"
    config.train.progress_bar = False
    work = tmp_path / "run"
    summary = run_synth(config, str(work))
    report = json.loads((work / "report.json").read_text())
    rows = [json.loads(line) for p in sorted(work.glob("train-*.jsonl")) for line in p.read_text().splitlines()]
    rejected = (work / "rejected.jsonl").read_text().splitlines()
    assert summary["kept"] == len(rows) > 0 and len(rows) + len(rejected) == report["candidates"]
    assert set(summary["by_method"]) == set(s.methods.split(",")) and summary["by_method"]["oss_instruct"] > 0
    assert all(set(r) >= {"instruction", "input", "output", "id", "method"} for r in rows)
    assert all(r["output"].startswith("```python\n") for r in rows)
    for m, g in report["generation"].items():  # items/s and tokens/s per method are reported
        assert g["requests"] > 0 and g["items_per_s"] >= 0 and "tokens_per_s" in g
    assert (work / "report.md").read_text().count("| self_instruct |") >= 2 and (work / "plots/funnel.png").exists()
    # the rows are what configs/sft.py (data.format=alpaca) reads, with no row skipped
    tokenizer = transformers.AutoTokenizer.from_pretrained(builtin_tokenizer_dir(), local_files_only=True)
    policy = SkipPolicy(False)
    _, read = load_examples([str(p) for p in sorted(work.glob("train-*.jsonl"))], FormatSpec("alpaca"), tokenizer,
                            hf_split="train", policy=policy)
    assert read == len(rows) and not policy.counts

    # a rerun asks the teacher nothing; a review rejecting one row removes it
    review = [json.loads(line) for line in (work / "review.jsonl").read_text().splitlines()]
    review[0]["verdict"] = "reject"
    (tmp_path / "review.jsonl").write_text("".join(json.dumps(r) + "\n" for r in review))
    config.synth.review_path = str(tmp_path / "review.jsonl")
    again = run_synth(config, str(work))
    assert scripted_backend[-1].calls == 0 and again["kept"] == summary["kept"] - 1
    carried = [json.loads(line) for line in (work / "review.jsonl").read_text().splitlines()]
    assert review[0]["id"] not in {r["id"] for r in carried}


def test_config_errors_name_the_field(tmp_path):
    from codejax.synth import check_synth_config

    for field, value, match in (("methods", "self_instruct,evol_instrct", "synth.methods.*evol_instrct"),
                                ("methods", "diversify,diversify", "names a method twice"),
                                ("backend", "vllm", "synth.backend='vllm'"),
                                ("security_drop", "critical", "synth.security_drop"),
                                ("evol_ops", "add_constraints,shout", "synth.evol_ops.*shout"),
                                ("novelty_threshold", 1.5, "synth.novelty_threshold")):
        sc = base_config().synth
        setattr(sc, field, value)
        with pytest.raises(ValueError, match=match):
            check_synth_config(sc)
    config = base_config()  # a full-size random model is no teacher
    with pytest.raises(ValueError, match="synth.backend=local has no teacher: set synth.model_path"):
        run_synth(config, str(tmp_path / "run"))
    config.synth.seed_path = str(tmp_path / "missing.jsonl")
    config.model.preset = "tiny"
    with pytest.raises(FileNotFoundError, match="synth.seed_path="):
        run_synth(config, str(tmp_path / "run"))
    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"instruction": "Write f."}\n{"instruction": 3}\n')
    config.synth.seed_path = str(bad)
    with pytest.raises(ValueError, match=r"seeds.jsonl:2: field 'instruction' must be a string"):
        run_synth(config, str(tmp_path / "run"))
