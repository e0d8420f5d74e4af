"""session_encoder on the Triton python backend (CPU): featurized sessions -> embeddings, via onnxruntime.

Per request (b sessions of L events; the batch dimension is the request's own):
    CATEGORICAL int64   [b, L, F]  the featurizer's ids; url id 0 (PAD) marks padding
    CONTINUOUS  float32 [b, L, C]
    EMBEDDING   float32 [b, E]     output
    EMBEDDING_TO_HEAD              the same values again: the ensemble feeds this one to intent_head (a Triton
                                   ensemble-pruning workaround, see training/export/onnx_export.py)
The inputs are `allow_ragged_batch`, so one execute() receives requests of different lengths. They are
right-padded with PAD and run together, one onnxruntime call per length bucket (`length_buckets`:
padding everything to the batch's longest session would multiply the work for the short majority).
Padding is masked inside the model, so a session's embedding does not depend on its batch company.
A bad request (lengths that disagree, L > max_len, an id outside its vocabulary, which onnxruntime's
Gather would reject for the whole batch) gets its own INVALID_ARG error; the rest of the batch runs.
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
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        # Triton gives every loaded version the one config.pbtxt (the newest export's): this version's own
        # vocabulary sizes, max_len and buckets are in its params.json (training/export/repository.py).
        own = os.path.join(version_dir, "params.json")
        if os.path.exists(own):
            with open(own) as f:
                params.update(json.load(f))
        self.max_len = int(params["max_len"])
        self.cardinalities = np.asarray(json.loads(params["cardinalities"]), dtype=np.int64)
        self.buckets = sorted(int(b) for b in params.get("length_buckets", "").split(",") if b) or [self.max_len]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_num_threads", "1"))
        options.inter_op_num_threads = 1
        # Spinning worker threads would steal the few cores from Triton and the other models.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(version_dir, "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.n_categorical = len(self.cardinalities)

    def _shape_problem(self, cat, cont):
        """Why a request's shapes cannot run, or None (ids and values are checked per batch, vectorized)."""
        if cat.shape[:2] != cont.shape[:2]:
            return f"CATEGORICAL {list(cat.shape)} and CONTINUOUS {list(cont.shape)} disagree on batch or length"
        if cat.shape[1] < 1 or cat.shape[1] > self.max_len:
            return f"session length {cat.shape[1]} is outside 1..{self.max_len} (the featurizer keeps the last events)"
        return None

    def _value_problem(self, cat, cont):
        bad = (cat < 0) | (cat >= self.cardinalities)
        if bad.any():
            column = int(np.argwhere(bad)[0][-1])
            return (f"CATEGORICAL column {column} has ids outside 0..{self.cardinalities[column] - 1}: "
                    "was it featurized with another vocabulary?")
        if not np.isfinite(cont).all():
            return "CONTINUOUS has NaN or infinite values"
        return None

    def _bucket(self, length):
        return next((b for b in self.buckets if length <= b), self.max_len)

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}  # length bucket -> [(request index, categorical, continuous)]
        for i, request in enumerate(requests):
            cat = pb_utils.get_input_tensor_by_name(request, "CATEGORICAL").as_numpy()
            cont = pb_utils.get_input_tensor_by_name(request, "CONTINUOUS").as_numpy()
            problem = self._shape_problem(cat, cont)
            if problem is None:
                groups.setdefault(self._bucket(cat.shape[1]), []).append((i, cat, cont))
            else:
                responses[i] = _error(problem)
        for members in groups.values():
            width = max(cat.shape[1] for _, cat, _ in members)
            rows = sum(cat.shape[0] for _, cat, _ in members)
            cat_batch = np.zeros((rows, width, self.n_categorical), dtype=np.int64)
            cont_batch = np.zeros((rows, width, members[0][2].shape[-1]), dtype=np.float32)
            spans = []
            row = 0
            for _, cat, cont in members:
                cat_batch[row: row + cat.shape[0], : cat.shape[1]] = cat
                cont_batch[row: row + cat.shape[0], : cat.shape[1]] = cont
                spans.append((row, row + cat.shape[0]))
                row += cat.shape[0]
            if self._value_problem(cat_batch, cont_batch) is not None:  # rare: find the culprits, blank them
                for (i, cat, cont), (start, stop) in zip(members, spans, strict=True):
                    problem = self._value_problem(cat, cont)
                    if problem is not None:
                        responses[i] = _error(problem)
                        cat_batch[start:stop] = 0
                        cont_batch[start:stop] = 0
            embedding = self.session.run(["EMBEDDING"], {"CATEGORICAL": cat_batch, "CONTINUOUS": cont_batch})[0]
            for (i, _, _), (start, stop) in zip(members, spans, strict=True):
                if responses[i] is None:
                    rows = embedding[start:stop]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("EMBEDDING", rows), pb_utils.Tensor("EMBEDDING_TO_HEAD", rows)])
        return responses


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
