"""The served model's settings and state: limits, the shared micro-batcher, health, and the
checks every route applies before the model runs."""

from __future__ import annotations

import asyncio
import logging
import math
import time

import numpy as np

from oaml.contract import INPUT_NAME, OUTPUT_NAMES
from oaml.serving.batching import BatcherBusy, BatcherStopped, MicroBatcher
from oaml.serving.decoders import DecoderPool
from oaml.serving.detector import Detector, refused_input
from oaml.serving.metrics import ServerMetrics
from oaml.serving.oip import OipError, brief
from oaml.serving.settings import ServeSettings

log = logging.getLogger("oaml.serving")
# The graph's outputs plus what the server derives: label, the detector's score ("confidence",
# -energy for ebo) and the OOD decision on it.
OUTPUTS = (*OUTPUT_NAMES, "label", "confidence", "is_ood")


class DetectorService:
    """The served model's state and checks, shared by the routes: one batcher, one readiness."""

    def __init__(self, detector: Detector, settings: ServeSettings) -> None:
        threshold = detector.info.confidence_threshold
        if threshold is None:
            raise ValueError(
                f"{detector.path} carries no calibrated OOD threshold; pass --threshold ENERGY"
            )
        if not math.isfinite(threshold):  # NaN would flag nothing: fail closed, at start
            raise ValueError(
                f"{detector.path}: the OOD threshold is {threshold}, not a number; re-export "
                "the detector (oaml export) or pass --threshold ENERGY"
            )
        self.detector, self.info, self.settings = detector, detector.info, settings
        self.metrics = ServerMetrics()
        self.batcher = MicroBatcher(
            detector.run, settings.max_batch, settings.max_wait_ms,
            self.metrics.batch_size.observe, settings.max_queued_bytes, refused_input,
            settings.max_batch_bytes,
        )  # fmt: skip
        self.ready = False
        size, channels = self.info.input_size, self.info.channels
        self.decoders = DecoderPool(
            settings.max_concurrent_decodes, settings.decode_timeout_s, size, channels,
            settings.max_pixels, self.info.interpolation,
        )  # fmt: skip
        self._probe_image = np.zeros((1, size, size, channels), np.uint8)
        self._probing = asyncio.Lock()

    @property
    def serving(self) -> bool:
        """Started, not shutting down, and the batcher's worker alive."""
        return self.ready and self.batcher.alive

    @property
    def live(self) -> bool:
        """False once the worker died or the model failed too often in a row: restart me."""
        batcher = self.batcher
        return not batcher.died and batcher.failures_in_a_row < self.settings.max_failures_in_a_row

    def _succeeded_lately(self) -> bool:
        last, batcher = self.batcher.last_success, self.batcher
        recent = last is not None and time.monotonic() - last < self.settings.ready_recent_s
        return recent and batcher.failures_in_a_row == 0

    async def check_ready(self) -> bool:
        """Serving, and the model answered lately; if it has not, one blank image must pass now
        (one probe at a time runs it; under traffic real batches answer for it)."""
        if not self.serving:
            return False
        if self._succeeded_lately():
            return True
        async with self._probing:
            if self._succeeded_lately():
                return True
            try:
                await asyncio.wait_for(self.batcher.submit(self._probe_image), 5.0)
            except Exception:
                log.warning("readiness: the model failed a one-image check", exc_info=True)
                return False
        return True

    def check_model(self, name: str, version: str | None = None) -> None:
        """404 unless `name` (and `version`, when given) is the model served here."""
        served = self.settings
        if name != served.name:
            raise OipError(
                f"model {brief(name)} is not served here; this server serves {served.name!r}", 404
            )
        if version is not None and version != served.version:
            raise OipError(
                f"version {brief(version)} of {served.name!r} is not served here; this server "
                f"serves version {served.version!r}",
                404,
            )

    def check_images(self, images: np.ndarray) -> None:
        """400 unless `images` is an NHWC batch within the count and pixel limits."""
        channels, limits = self.info.channels, self.settings
        if images.ndim != 4 or images.shape[3] != channels:
            raise OipError(
                f"input {INPUT_NAME!r} must be [N, H, W, {channels}] (NHWC, {channels} "
                f"channel(s)), got shape {list(images.shape)}"
            )
        n, height, width = images.shape[:3]
        if not 1 <= n <= limits.max_images:
            raise OipError(f"send 1 to {limits.max_images} images per request, got {n}")
        if height < 1 or width < 1 or height * width > limits.max_pixels:
            raise OipError(f"image size {height}x{width} is empty or over the pixel limit")

    async def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits, energies and confidences through the shared batcher (503 once it has
        stopped)."""
        timeout = self.settings.infer_timeout_s
        try:
            logits, energy, confidence = await asyncio.wait_for(
                self.batcher.submit(images), timeout
            )
        except BatcherStopped as exc:
            raise OipError(str(exc), 503) from None
        except BatcherBusy as exc:
            raise OipError(str(exc), 503, {"retry-after": "1"}) from None
        except TimeoutError:
            message = f"the model did not answer within {timeout:g} s; retry shortly"
            raise OipError(message, 503, {"retry-after": "1"}) from None
        except Exception as exc:
            # onnxruntime refusing an input it was given is the request's fault: a 400 naming
            # what it said (batches only join equal shapes, so no other request shares it).
            if refused_input(exc):
                reason = str(exc).splitlines()[0][:300]
                raise OipError(f"the model refused the input: {reason}") from None
            raise
        self.metrics.images.inc(len(energy))
        self.metrics.ood_images.inc(int(self.detector.flags(confidence).sum()))
        return logits, energy, confidence

    def model_metadata(self) -> dict:
        """The OIP model metadata, with the detector's classes, size and threshold."""
        info, k = self.info, self.info.num_classes
        return {
            "name": self.settings.name,
            "versions": [self.settings.version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, -1, -1, info.channels]}
            ],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, k]},
                {"name": "energy", "datatype": "FP32", "shape": [-1]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "confidence", "datatype": "FP32", "shape": [-1]},
                {"name": "is_ood", "datatype": "BOOL", "shape": [-1]},
            ],
            "parameters": {
                "class_names": list(info.class_names),
                "input_size": info.input_size,
                "temperature": info.temperature,
                "ood_threshold": info.threshold,
                "ood_score": info.score,
                "ood_confidence_threshold": info.confidence_threshold,
                "arch": info.arch,
            },
        }
