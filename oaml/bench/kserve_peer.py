"""The peer of `oaml bench serve --peer kserve`: the same ONNX detector behind KServe's Python
ModelServer, written as a team writing a custom predictor would (a kserve.Model whose predict runs
the onnxruntime session on the request's tensor).

Run by the interpreter of its own virtual environment (kserve's pins are not the project's), so it
imports only kserve, onnxruntime and numpy, never oaml.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

OUTPUTS = ("logits", "energy")


class OnnxDetector(Model):
    """One onnxruntime session (the same settings as `oaml serve`'s), v2 tensors in and out."""

    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.ready = True

    async def predict(
        self, payload: InferRequest, headers=None, response_headers=None
    ) -> InferResponse:
        images = payload.inputs[0].as_numpy().astype(np.uint8, copy=False)
        results = self.session.run(list(OUTPUTS), {"images": images})
        outputs = []
        for name, array in zip(OUTPUTS, results, strict=True):
            output = InferOutput(name, list(array.shape), "FP32")
            output.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            payload.id, self.name, outputs, use_binary_outputs=payload.use_binary_outputs
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--name", default="bench")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args, _ = parser.parse_known_args()
    model = OnnxDetector(args.name, args.model_path, args.threads)
    ModelServer(
        http_port=args.port, grpc_port=args.grpc_port, enable_grpc=False, workers=1,
        enable_latency_logging=False,
    ).start([model])  # fmt: skip


if __name__ == "__main__":
    main()
