"""Small helpers the backend-agnostic layer and model tests share (keras only)."""

import keras
from keras import ops


def to_numpy(x):
    return ops.convert_to_numpy(x)


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)
