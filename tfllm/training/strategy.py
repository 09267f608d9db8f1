"""Choosing the tf.distribute strategy that the train loop runs under."""

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored")


def resolve_strategy(name="auto"):
    """`default`: one device. `mirrored`: every local GPU (or the CPU's logical devices).
    `auto`: mirrored when several GPUs are visible, else default."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
