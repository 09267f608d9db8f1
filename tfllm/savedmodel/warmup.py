"""TF Serving's warm-up file (`assets.extra/tf_serving_warmup_requests`): PredictionLog
records the server replays before it serves a version, so the first real request does
not pay for loading kernels and tracing."""

import tensorflow as tf


def predict_log(model_name, signature, **inputs):
    """One PredictLog record calling `signature` with `inputs` {name: (value, dtype)}."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
        name=model_name, signature_name=signature))
    for key, (value, dtype) in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup(path, records):
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record.SerializeToString())
