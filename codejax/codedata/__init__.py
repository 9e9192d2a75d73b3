"""Code data: source trees, git repos and code datasets -> cleaned, deduplicated training data.

    python -m codejax.main --config configs/data_pipeline.py --workdir runs/data

or, from Python (the `data` job is a thin wrapper around this)::

    from codejax.codedata.pipeline import run_pipeline, settings_from_config
    summary = run_pipeline(settings_from_config(config), "runs/data")

Modules: `pipeline` (the driver; its docstring shows the whole flow), `settings` (the
checked config section), `stages` (the per-file stages the worker processes run), `functions` (the
stdlib function miner behind the quickstart's instruction pairs; files come from codejax.corpus,
the one source-tree walker), and, in pipeline order:

  collect      sources -> file references; reading, with bad files as counted skip reasons
  language     extension / shebang -> language
  licenses     SPDX headers, LICENSE files, the allow-list
  quality      parse, line lengths, alphanumeric share, generated markers, complexity
  decontam     n-gram overlap with HumanEval (and other eval sets)
  security     bandit findings, severity cut
  pii          emails, public IPs, author names -> placeholders
  secret_scan  detect-secrets, with a prefilter, -> <SECRET>
  dedup        exact hashes, MinHash LSH near-duplicate clusters
  splits       held-out split by repo / package / directory / file
  tasks/       task builders (builders, source) over the augment/ transforms and bug injectors
  mixing       multi-task mixing and curriculum order
  output       sharded JSONL / parquet
  report       report.json, report.md, plots

Importing the package imports only the stdlib miner (stdlib-only), so a worker that needs
one module pays for that module only.
"""

from codejax.codedata.functions import (DEFAULT_MAX_BODY_LINES, MiningStats, mine_functions, mine_source, mine_tree,
                                        split_by_file, write_jsonl)

__all__ = ["DEFAULT_MAX_BODY_LINES", "MiningStats", "mine_functions", "mine_source", "mine_tree", "split_by_file",
           "write_jsonl"]
