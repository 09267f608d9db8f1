"""Reusable Keras 3 layers (keras.ops only: any backend)."""

from tfllm.layers.attention import MultiHeadSelfAttention, make_attention_mask
from tfllm.layers.cross_attention import MultiHeadCrossAttention
from tfllm.layers.decoder_block import TransformerDecoderBlock
from tfllm.layers.embedding import PositionalEmbedding, positions_from, sinusoidal_encoding
from tfllm.layers.transformer import TransformerBlock

__all__ = ["MultiHeadCrossAttention", "MultiHeadSelfAttention", "PositionalEmbedding",
           "TransformerBlock", "TransformerDecoderBlock", "make_attention_mask",
           "positions_from", "sinusoidal_encoding"]
