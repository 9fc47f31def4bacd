"""The exported detector at run time: an onnxruntime session plus the metadata in the file.

Used by the server, the batch scorer and `oaml evaluate --onnx`, so all three give the same
numbers. The metadata reader and the OOD decision come from oaml.contract. Imports onnxruntime
and numpy only: a serving image needs no torch.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from oaml.contract import (
    INPUT_NAME,
    OUTPUT_NAMES,
    SCORE_OUTPUT,
    DetectorError,
    DetectorInfo,
    below,
    read_metadata,
)

__all__ = [  # DetectorError and DetectorInfo live in oaml.contract; imported from here too
    "Detector",
    "DetectorError",
    "DetectorInfo",
    "default_threads",
    "pick_providers",
    "refused_input",
    "session_options",
]


def default_threads() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None, spinning: bool = True):
    """Sequential execution, all graph optimisations, intra-op threads = usable cores.

    `spinning=False`: idle intra-op threads sleep instead of spinning, which a process whose
    other threads (a server's event loop) need the same cores wants."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def pick_providers(device: str = "auto") -> list[str]:
    """CUDA when present (device auto or cuda), TensorRT only when asked for (device tensorrt:
    it rebuilds engines for every new input shape), CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = ["CUDAExecutionProvider"]
    if device == "tensorrt":
        wanted.insert(0, "TensorrtExecutionProvider")
    chosen = [p for p in wanted if p in available]
    if device != "auto" and not chosen:
        raise DetectorError(
            f"--device {device} needs onnxruntime-gpu with CUDA; available providers: {available}"
        )
    if chosen and hasattr(ort, "preload_dlls"):
        # The images carry CUDA and cuDNN as pip wheels (no CUDA base image): load them from
        # site-packages, where the CUDA provider would not look by itself.
        ort.preload_dlls()
    return [*chosen, "CPUExecutionProvider"]


def refused_input(exc: Exception) -> bool:
    """onnxruntime refused the input it was given (shape, type): the request's fault, not the
    model's."""
    return type(exc).__name__ == "InvalidArgument" and "onnxruntime" in type(exc).__module__


class Detector:
    """An onnxruntime session over an exported detector, with its metadata."""

    def __init__(
        self,
        path: str | Path,
        threshold: float | None = None,
        threads: int | None = None,
        device: str = "cpu",
        spinning: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise DetectorError(f"model file {self.path} does not exist")
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(threads, spinning), providers=pick_providers(device)
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DetectorError(f"{self.path} cannot be loaded by onnxruntime: {exc}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        info = read_metadata(meta, self.path)
        if threshold is not None:  # a threshold given by hand is in energy units
            if info.score != "ebo":
                raise DetectorError(
                    f"{self.path} decides on the {info.score} score: its threshold comes "
                    "from the file, not --threshold (an energy)"
                )
            info = replace(info, threshold=float(threshold))
        outputs = [o.name for o in self.session.get_outputs()]
        if info.score != "ebo" and SCORE_OUTPUT not in outputs:
            raise DetectorError(f"{self.path} names the {info.score} score but has no score output")
        self.info = info
        self._outputs = [*OUTPUT_NAMES, SCORE_OUTPUT] if info.score != "ebo" else list(OUTPUT_NAMES)
        self._gpu = self.session.get_providers()[0] != "CPUExecutionProvider"

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 [N, H, W, C] pixels -> (logits [N, K], energy [N], confidence [N]), float32:
        the confidence is the detector's score (the graph's `score` output, or -energy)."""
        if self._gpu:
            found = self._run_bound(images)
        else:
            found = self.session.run(self._outputs, {INPUT_NAME: images})
        logits, energy = found[0], found[1]
        return logits, energy, found[2] if len(found) > 2 else -energy

    def _run_bound(self, images: np.ndarray) -> list[np.ndarray]:
        """IOBinding on GPU: the input is copied once and outputs are allocated by the runtime."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, np.ascontiguousarray(images))
        for name in self._outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def flags(self, confidence: np.ndarray) -> np.ndarray:
        """Per image: the OOD decision (confidence below the calibrated threshold)."""
        threshold = self.info.confidence_threshold
        if threshold is None:
            return np.zeros(len(confidence), bool)
        return below(confidence, threshold)

    def decide(
        self, logits: np.ndarray, energy: np.ndarray, confidence: np.ndarray
    ) -> list[dict[str, Any]]:
        """Per image: label, class name, confidence (the detector's score), energy and the OOD
        decision."""
        labels = logits.argmax(axis=1)
        return [
            {
                "label": int(label),
                "class_name": self.info.class_names[int(label)],
                "confidence": float(c),
                "energy": float(e),
                "is_ood": bool(flag),
            }
            for label, e, c, flag in zip(
                labels, energy, confidence, self.flags(confidence), strict=True
            )
        ]
