"""Functional-API model builders (keras only: any backend)."""

from tfllm.models.config import PRESETS, GPTConfig
from tfllm.models.classifier import build_classifier
from tfllm.models.gpt import build_gpt, call_with_cache, init_cache

__all__ = ["PRESETS", "GPTConfig", "build_classifier", "build_gpt", "call_with_cache", "init_cache"]
