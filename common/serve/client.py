"""A gRPC client for a zoo model under TF Serving: one CT slice in, its label map out.

``zoo request HOST:PORT NAME CT.nii.gz OUT.png --slice 40`` reads the volume
as ``zoo predict`` does (canonical orientation, the run's HU window), sends
one axial slice as a ``PredictRequest`` to ``serving_default`` and writes the
returned label map (a PNG of class indices, or ``.npy``).
"""

from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from common import atomic


def request_for(image: np.ndarray, name: str, signature: str = "serving_default") -> predict_pb2.PredictRequest:
    """A PredictRequest carrying a (B, H, W, C) float32 batch as the input ``image``."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(np.asarray(image, np.float32)))
    return request


def predict_labels(target: str, name: str, image: np.ndarray, timeout: float = 30.0) -> np.ndarray:
    """Sends one windowed (H, W) slice to ``target`` (host:port) and returns its (H, W) labels."""
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request_for(image[None, ..., None], name), timeout=timeout)
        except grpc.RpcError as error:
            raise OSError(f"{target}: model server did not answer for '{name}' ({error.code().name}: "
                          f"{error.details()})") from None
    return tf.make_ndarray(response.outputs["labels"])[0]


def write_labels(path, labels: np.ndarray) -> None:
    """Writes a label map as a ``.npy`` array, else an image of class indices (PNG)."""
    if not str(path).endswith(".npy"):
        atomic.write_image(path, labels.astype(np.uint8))
        return
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, labels)
