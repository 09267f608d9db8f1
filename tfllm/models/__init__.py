"""Functional-API model builders (keras only: any backend)."""

from tfllm.models import seq2seq
from tfllm.models.config import PRESETS, GPTConfig
from tfllm.models.classifier import build_classifier
from tfllm.models.gpt import build_gpt, call_with_cache, init_cache
from tfllm.models.seq2seq import (SEQ2SEQ_PRESETS, Seq2SeqConfig, build_seq2seq,
                                  decode_with_cache, init_decoder_cache)

__all__ = ["PRESETS", "SEQ2SEQ_PRESETS", "GPTConfig", "Seq2SeqConfig", "build_classifier",
           "build_gpt", "build_seq2seq", "call_with_cache", "decode_with_cache",
           "init_cache", "init_decoder_cache", "seq2seq"]
