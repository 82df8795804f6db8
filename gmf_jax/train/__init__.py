"""Training: the pure step and chunk, the optimizers, losses, and the outer loop."""
