"""tfllm: GPT-style language models with Keras 3 and TensorFlow.

Importing `tfllm` imports nothing heavy; pick the submodule you need
(`tfllm.layers`, `tfllm.models`, `tfllm.tokenizers`, ...).
"""

__version__ = "0.1.0"
