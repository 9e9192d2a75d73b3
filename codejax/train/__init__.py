"""Training: state, step builders, loop, checkpoints, metrics."""
