"""The training loop, the supervised warm start, checkpoints and run folders."""
