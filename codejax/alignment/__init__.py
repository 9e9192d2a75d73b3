"""Constitutional AI, safety and helpfulness data for code assistants (job `constitutional`).

    from codejax.alignment import run_constitutional, load_constitution, secure_rewrite
    run_constitutional(config, workdir)     # configs/constitutional.py

- constitution.py: principles as YAML/JSON files (constitutions/code_assistant.yaml by default);
- tasks.py: the prompt rows; builders.py: red-team, clarifying-question, explanation, multi-turn
  and diversity builders, and the secure-by-default pairs (data/*.jsonl: the built-in seeds);
- checks.py: bandit and the sandbox on each reply; rewrites.py: targeted secure rewrites;
- rules.py / critics.py: the scripted critic and the model critic (a teacher through the synth
  backends, or the policy itself), and their judges for RLAIF pairs;
- engine.py: the loop, its outputs and report.
The safety evaluations these outputs are measured with live in codejax/evaluation/safety.py.
"""
from codejax.alignment.builders import BUILDERS, register_builder, secure_pairs
from codejax.alignment.checks import Findings, check_replies
from codejax.alignment.constitution import Constitution, ConstitutionError, Principle, load_constitution
from codejax.alignment.critics import ModelCritic, RulesCritic
from codejax.alignment.engine import check_cai_config, mix_redteam, read_rows, run_constitutional
from codejax.alignment.rewrites import secure_rewrite
from codejax.alignment.rules import RULES, harm_category
from codejax.alignment.tasks import KINDS, Task, load_tasks

__all__ = ["BUILDERS", "Constitution", "ConstitutionError", "Findings", "KINDS", "ModelCritic", "Principle", "RULES",
           "RulesCritic", "Task", "check_cai_config", "check_replies", "harm_category", "load_constitution",
           "load_tasks", "mix_redteam", "read_rows", "register_builder", "run_constitutional", "secure_pairs",
           "secure_rewrite"]
