"""Training: state, step builders, the run scaffold (run.py), the LM loop, checkpoints, metrics."""
