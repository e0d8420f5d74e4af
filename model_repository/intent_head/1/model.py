"""intent_head on the Triton python backend (CPU): embeddings -> calibrated intent probabilities.

Per request: EMBEDDING float32 [b, E] in, INTENT_PROBS float32 [b, K] out (columns named by labels.txt).
All requests of a dynamic batch share one shape, so they are stacked and run as one onnxruntime call.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_num_threads", "1"))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        embeddings = [pb_utils.get_input_tensor_by_name(r, "EMBEDDING").as_numpy() for r in requests]
        probs = self.session.run(["INTENT_PROBS"], {"EMBEDDING": np.concatenate(embeddings)})[0]
        responses = []
        start = 0
        for embedding in embeddings:
            stop = start + embedding.shape[0]
            tensor = pb_utils.Tensor("INTENT_PROBS", probs[start:stop])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start = stop
        return responses
