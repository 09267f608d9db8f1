"""LoRA on a GPT: Keras' own low-rank adapters on every block's projections, and the
merge back into a plain GPT for inference and export.

`keras.layers.Dense.enable_lora(rank)` freezes the layer's kernel and adds
`lora_kernel_a (in, rank)` and `lora_kernel_b (rank, out)`; the layer then computes with
`kernel + (alpha / rank) * a @ b`. b starts at zero, so an adapted model starts out
exactly as the one it adapts. Here the adapters go on the fused qkv and output projections
of attention and both feed-forward projections, and every other weight is frozen, so the
adapters are all that trains.

A LoRA model keeps its base kernels untouched and saves the adapters beside them (a
TensorFlow checkpoint holds both, so a run resumes). `merged_gpt` folds the adapters
into the kernels of a fresh `build_gpt(config)`: the plain layout that load_run returns
and export serves, with the same outputs.

    enable_lora(model, rank=8)     # model.trainable_variables: the adapters only
    plain = merged_gpt(model, config)
"""

import numpy as np
from keras import ops

from tfllm.models import build_gpt
from tfllm.models.gpt import transformer_blocks


def lora_targets(model):
    """The Dense layers that take adapters: qkv, output, ffn_in, ffn_out of each block."""
    layers = []
    for block in transformer_blocks(model):
        layers += [block.attention.qkv, block.attention.output_dense, block.ffn_in,
                   block.ffn_out]
    return layers


def enable_lora(model, rank, alpha=None, train_rows=()):
    """Add rank-`rank` adapters (scale `alpha / rank`, alpha defaulting to rank) to every
    target layer of a built GPT and freeze every other weight. Returns the adapters.

    train_rows: token ids whose embedding rows must train too (tokens new to the model,
    such as chat markers added to GPT-2): the token table stays trainable, and the
    trainer keeps its other rows fixed with `embedding_row_masks`."""
    rank = int(rank)
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    layers = lora_targets(model)
    too_big = [layer for layer in layers if rank > min(layer.kernel.shape)]
    if too_big:
        raise ValueError(f"LoRA rank {rank} is larger than the smaller side of the "
                         f"{too_big[0].name} kernel {tuple(too_big[0].kernel.shape)}: "
                         "lower --lora-rank")
    for layer in layers:
        layer.enable_lora(rank, lora_alpha=alpha)
    adapters = lora_variables(model)
    kept = {id(v) for v in adapters}
    if len(train_rows):
        kept.add(id(token_table(model)))
    for variable in model.weights:
        if id(variable) not in kept:
            variable.trainable = False
    return adapters


def token_table(model):
    """The token embedding table of a GPT."""
    return model.get_layer("embedding").token_embeddings


def embedding_row_masks(model, rows):
    """{token table path: bool (vocab,) mask, True at `rows`}: the gradient mask that
    trains only those rows (see `Trainer(gradient_masks=...)`); {} when rows is empty."""
    if not len(rows):
        return {}
    table = token_table(model)
    mask = np.zeros(table.shape[0], bool)
    mask[list(rows)] = True
    return {table.path: mask}


def lora_variables(model):
    """Every lora_kernel_a / lora_kernel_b of `model`, in layer order."""
    return [v for layer in lora_targets(model) if getattr(layer, "lora_enabled", False)
            for v in (layer.lora_kernel_a, layer.lora_kernel_b)]


def merged_weights(model):
    """{weight path: float32 array} of `model` with every adapter folded into its
    kernel (computed in float32 whatever the compute dtype); adapters themselves left out."""
    values = {v.path: ops.convert_to_numpy(v).astype(np.float32) for v in model.weights}
    for layer in lora_targets(model):
        if not getattr(layer, "lora_enabled", False):
            continue
        a = values.pop(layer.lora_kernel_a.path)
        b = values.pop(layer.lora_kernel_b.path)
        kernel = layer.lora_kernel_a.path.rsplit("/", 1)[0] + "/kernel"
        values[kernel] = values[kernel] + (layer.lora_alpha / layer.lora_rank) * (a @ b)
    return values


def merged_gpt(model, config):
    """A plain float32 `build_gpt(config)` whose kernels hold `model`'s adapters merged."""
    values = merged_weights(model)
    plain = build_gpt(config)
    missing = [v.path for v in plain.weights if v.path not in values]
    if missing:
        raise ValueError(f"the model has no weight '{missing[0]}' of a GPT built from this "
                         "config: merge with the config the model was built from")
    for variable in plain.weights:
        variable.assign(values[variable.path])
    return plain
