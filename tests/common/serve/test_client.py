"""The gRPC client against a stand-in PredictionService that serves the exported SavedModel."""

from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import unet_transformer
from common.ct import volumes
from common.serve import client as serving_client
from common.serve import export


class SavedModelServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers Predict as TF Serving does: the named signature on the request's inputs."""

    def __init__(self, name, version_dir):
        self.name, self.signature = name, tf.saved_model.load(str(version_dir)).signatures["serving_default"]

    def Predict(self, request, context):
        if request.model_spec.name != self.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request.model_spec.name}")
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        for key, value in self.signature(**inputs).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = unet_transformer.build_model("unet", num_classes=8, base_filters=2)
    version_dir = export.export_saved_model(model, tmp_path_factory.mktemp("serving"), "unet",
                                            warmup_sizes=((64, 64),))
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(SavedModelServicer("unet", version_dir),
                                                                        grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield model, f"127.0.0.1:{port}"
    grpc_server.stop(grace=None)


def test_slice_round_trip_matches_keras(server, tiny_cohort, tmp_path):
    model, target = server
    image = volumes.read_slice(tiny_cohort / "images" / "case_001.nii.gz", 5)
    labels = serving_client.predict_labels(target, "unet", image)
    np.testing.assert_array_equal(labels, np.argmax(np.asarray(model(image[None, ..., None])), -1)[0])
    serving_client.write_labels(tmp_path / "labels.npy", labels)
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), labels)


def test_unknown_model_and_absent_server_are_clear_errors(server, tmp_path):
    _, target = server
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(OSError, match="did not answer for 'liver' .*NOT_FOUND"):
        serving_client.predict_labels(target, "liver", image)
    with pytest.raises(OSError, match="127.0.0.1:1: model server did not answer"):
        serving_client.predict_labels("127.0.0.1:1", "unet", image, timeout=2)


def test_slice_index_is_checked(tiny_cohort):
    with pytest.raises(ValueError, match="slice: 99 is outside the 12 slices"):
        volumes.read_slice(tiny_cohort / "images" / "case_000.nii.gz", 99)
