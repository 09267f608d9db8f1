"""Training: strategy resolution, optimizer and schedule, the distributed train loop,
checkpoints and logs (TensorFlow-specific)."""
