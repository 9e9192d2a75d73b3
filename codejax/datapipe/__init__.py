"""The code data pipeline: source trees, git repos and code datasets -> training shards.

    python -m codejax.main --config configs/data_pipeline.py --workdir runs/data

or, from Python (the job is a thin wrapper around this)::

    from codejax.datapipe.pipeline import run_pipeline, settings_from_config
    summary = run_pipeline(settings_from_config(config), "runs/data")

Modules: `pipeline` (the driver; its docstring shows the whole flow), `settings` (the
checked config section), `stages` (the per-file stages the worker processes run), and, in
pipeline order:

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
  tasks        task builders (with task_builders, task_source and the aug_* augmentations)
  mixing       multi-task mixing and curriculum order
  output       sharded JSONL / parquet
  report       report.json, report.md, plots

Importing the package imports nothing else, so a worker that needs one module pays for
that module only.
"""
