"""The loop on a scripted, unaligned policy: critiques and revisions, the gate, rejections, red-team keep,
RLAIF with a model teacher, the outputs' layout (read back by the SFT and DPO readers), and config errors."""
import json
import random

import pytest

from codejax.alignment import check_cai_config, load_tasks, mix_redteam, read_rows, run_constitutional
from codejax.data.formats import parse_messages
from codejax.data.pairs import PreferenceFields, parse_pair
from codejax.evaluation.benchmarks import BenchmarkDataError
from codejax.evaluation.safety import is_refusal

from alignment_helpers import ScriptedPolicy, ScriptedTeacher, tiny_config


def _run(tmp_path, name="cai", policy=None, teacher=None, **cai):
    config = tiny_config(**{"items_per_builder": 0, "rlaif": False, **cai})
    work = tmp_path / name
    summary = run_constitutional(config, str(work), policy_backend=policy or ScriptedPolicy(), teacher_backend=teacher)
    return summary, json.loads((work / "report.json").read_text()), work


def test_rules_critic_aligns_an_unaligned_policy(tmp_path):
    summary, report, work = _run(tmp_path)
    original, final = report["rates"]["original"], report["rates"]["final"]
    assert original["refusal_rate_harmful"] == 0 and final["refusal_rate_harmful"] == 1
    assert original["insecure_code_rate"] > 0.3 and final["insecure_code_rate"] == 0
    assert final["over_refusal_rate_benign"] == 0 and final["tests_pass_rate"] == 1
    assert report["critiques_by_principle"]["refuse_harm"] >= 9 and report["revision_outcomes"]["accepted"] > 0
    traces = read_rows(str(work), "traces")
    assert len(traces) == report["live"] and all(isinstance(t["critiques"], list) and isinstance(t["revisions"], list)
                                                 for t in traces)
    harmful = next(t for t in traces if t["kind"] == "harmful")
    assert harmful["changed"] and is_refusal(harmful["final"]) and harmful["critiques"][0]["principle"] == "refuse_harm"
    # the multi-turn rows carry the conversation; the SFT rows parse as chats, the pairs as TRL pairs
    sft = read_rows(str(work), "sft")
    assert any(len(r["messages"]) == 4 for r in sft) and summary["sft_rows"] == len(sft)
    for i, row in enumerate(sft):
        assert parse_messages(row, f"sft:{i}")[-1]["role"] == "assistant"
    prefs = read_rows(str(work), "preference")
    assert {"revision", "secure_rewrite"} <= {p["source_pair"] for p in prefs}
    for i, row in enumerate(prefs):
        prompt, chosen, rejected, _ = parse_pair(row, f"pref:{i}", PreferenceFields())
        assert prompt[-1]["role"] == "user" and chosen != rejected
    md = (work / "report.md").read_text()
    assert "## Rates, original replies against final replies" in md and "## Examples" in md


def test_a_revision_that_breaks_passing_tests_is_rejected(tmp_path):
    # the teacher's every revision is a refusal; on a coding task whose (insecure) code passed its tests
    # that breaks them, so the reply stays (and a harmful request's refusal is accepted)
    _, report, work = _run(tmp_path, critic="teacher", teacher=ScriptedTeacher(), builders="prompts")
    assert report["revision_outcomes"].get("breaks_tests", 0) >= 1
    traces = {t["prompt"][0]["content"]: t for t in read_rows(str(work), "traces")}
    literal = next(t for p, t in traces.items() if "sum_list_literal" in p)
    assert not literal["changed"] and literal["revisions"][0]["rejected_because"] == "breaks_tests"
    assert "sum_list_literal" not in " ".join(r["messages"][0]["content"] for r in read_rows(str(work), "sft")), \
        "a final reply the gate flags (eval on user input) is no SFT row"


def test_redteam_rows_the_policy_refuses_are_dropped_and_the_ratio_is_set(tmp_path):
    _, report, work = _run(tmp_path, policy=ScriptedPolicy(refuse=("keylogger", "virus")),
                           builders="prompts,redteam", items_per_builder=30, redteam_ratio=0.25)
    assert report["counts"]["redteam_refused"] > 0
    assert report["redteam_complied"] + report["counts"]["redteam_refused"] == report["builders"]["redteam"]
    assert abs(report["outputs"]["sft_mix"]["redteam_share"] - 0.25) < 0.03
    assert all(t["source"] != "redteam" or "keylogger" not in t["prompt"][-1]["content"]
               for t in read_rows(str(work), "traces"))


def test_mix_redteam_samples_down_and_repeats_up():
    rows = [{"source": "redteam", "i": i} for i in range(10)] + [{"source": "prompts", "i": i} for i in range(30)]
    down, info = mix_redteam(rows, 0.1, random.Random(0))
    assert info["dropped"] == 7 and sum(r["source"] == "redteam" for r in down) == 3 and len(down) == 33
    up, info = mix_redteam(rows, 0.5, random.Random(0))
    assert info["repeated"] == 20 and sum(r["source"] == "redteam" for r in up) == 30
    assert mix_redteam(rows, 0.0, random.Random(0))[0] == rows


def test_model_teacher_rlaif_and_rerun_from_the_cache(tmp_path):
    policy, teacher = ScriptedPolicy(), ScriptedTeacher()
    _, report, work = _run(tmp_path, policy=policy, teacher=teacher, critic="teacher", builders="prompts,redteam",
                           rlaif=True, rlaif_temperature=1.0, items_per_builder=6, principles_per_round=2)
    assert report["critic"] == "scripted-teacher" and report["cache"]["misses"] > 0
    assert any(p.startswith("You are reviewing") for p in teacher.prompts)
    # the scripted policy replies the same at any temperature: no RLAIF pair, counted
    assert report["rlaif"] == {"same_empty_or_error": report["live"]}
    rows = read_rows(str(work), "preference")
    again_policy, again_teacher = ScriptedPolicy(), ScriptedTeacher()
    _, report2, _ = _run(tmp_path, policy=again_policy, teacher=again_teacher, critic="teacher",
                         builders="prompts,redteam", rlaif=True, rlaif_temperature=1.0, items_per_builder=6,
                         principles_per_round=2)
    assert again_policy.calls == 0 and again_teacher.prompts == [] and report2["cache"]["misses"] == 0
    assert read_rows(str(work), "preference") == rows


@pytest.mark.parametrize("field, value, message", [
    ("builders", "prompts,vibes", "unknown: ['vibes']"), ("critic", "oracle", "cai.critic='oracle'"),
    ("redteam_ratio", 1.0, "cai.redteam_ratio=1.0"), ("rounds", 0, "cai.rounds=0"),
    ("security_severity", "none", "cai.security_severity"), ("sft_rows", "some", "cai.sft_rows"),
])
def test_config_errors_name_the_field(field, value, message):
    config = tiny_config(**{field: value})
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_cai_config(config.cai)


def test_prompt_rows_are_checked(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "Write f.", "test": "assert f()"}) + "\n")
    with pytest.raises(BenchmarkDataError, match=r"p.jsonl:1: unknown field\(s\) \['test'\]"):
        load_tasks(str(path))
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
                    + "\n")
    with pytest.raises(BenchmarkDataError, match="must end with the user's turn"):
        load_tasks(str(path))
    path.write_text(json.dumps({"prompt": "x", "kind": "evil"}) + "\n")
    with pytest.raises(BenchmarkDataError, match="field 'kind'='evil'"):
        load_tasks(str(path))
    config = tiny_config(prompts_path=str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="cai.prompts_path"):
        run_constitutional(config, str(tmp_path / "w"), policy_backend=ScriptedPolicy())


def test_secure_pairs_from_code_files(tmp_path):
    from codejax.alignment import check_replies, secure_pairs
    from codejax.synth import load_snippets

    rows = [{"content": "import yaml\n\ndef load(text):\n    '''Parse a YAML document.'''\n    return yaml.load(text)\n"},
            {"content": "def add(a, b):\n    return a + b\n"},
            {"text": "not python at all ((("}]
    path = tmp_path / "train-00000-of-00001.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    snippets, skipped = load_snippets(str(tmp_path / "train-*.jsonl"), 10, 4000)
    pairs, counts = secure_pairs([], snippets, lambda replies, tests: check_replies(replies, tests))
    assert skipped["no_code"] == 1 and counts == {"candidates": 2, "not_insecure": 1, "no_rewrite": 0,
                                                  "rewrite_rejected": 0, "kept": 1}
    (pair,) = pairs
    assert pair["prompt"][0]["content"] == "Write a Python function `load(text)`: Parse a YAML document."
    assert "yaml.safe_load(text)" in pair["chosen"][0]["content"] and "yaml.load" in pair["rejected"][0]["content"]
    assert pair["security_ids"] == ["B506"]


class _EmptyPolicy(ScriptedPolicy):
    def reply(self, messages) -> str:
        return ""


def test_empty_replies_never_become_rows(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Tell me a joke.", "kind": "chat"}) + "\n"
                       + json.dumps({"prompt": "How do I kill a stuck process?", "kind": "benign",
                                     "reference": "Use os.kill(pid, signal.SIGTERM)."}) + "\n")
    _, report, work = _run(tmp_path, policy=_EmptyPolicy(), builders="prompts", prompts_path=str(prompts))
    sft = read_rows(str(work), "sft")
    # an empty reply is unhelpful: the benign row's is revised to its reference; the chat row has no
    # reference, so its reply stays empty and the gate leaves it out
    assert [r["messages"][-1]["content"] for r in sft] == ["Use os.kill(pid, signal.SIGTERM)."]
    assert report["unresolved_by_principle"] == {"no_over_refusal": 1}
    for p in read_rows(str(work), "preference"):
        assert p["chosen"][0]["content"].strip() and p["rejected"][0]["content"].strip()
