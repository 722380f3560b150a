"""ONNX models (converted from scikit-learn when published) on onnxruntime's CPU provider.

This is the fast path: importing onnxruntime and loading a small model takes a fraction of
`import sklearn` (which pulls in scipy), and an ONNX file is data, not code, so it needs no
pickle gate. What the server tells clients (feature names, classes, which output is which)
comes from the manifest entry written at publishing (`server`), else from the same block stored
in the model's own metadata (`predictive_infer`), else from the graph's input shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import BadRequest, ModelRefused
from .runtime import OUTPUTS, Format, ModelInfo

FORMATS = {"onnx": Format(suffixes=(".onnx",))}
METADATA_KEY = "predictive_infer"
ONNX_TYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32}


class OnnxRuntime:
    def __init__(self, session: Any, server: Mapping[str, Any]):
        self.session = session
        (graph_input,) = session.get_inputs()
        self.input_name = graph_input.name
        if graph_input.type not in ONNX_TYPES:
            raise ModelRefused(f"ONNX input {graph_input.name!r} is {graph_input.type}; a numeric tensor is needed")
        self.dtype = ONNX_TYPES[graph_input.type]
        graph_outputs = [o.name for o in session.get_outputs()]
        self.output_names: dict[str, str] = dict(server.get("outputs") or _guess_outputs(graph_outputs))
        unknown = [o for o in self.output_names.values() if o not in graph_outputs]
        if unknown or "predict" not in self.output_names:
            raise ModelRefused(f"ONNX outputs {graph_outputs} do not include {unknown or ['predict']}")
        n = server.get("n_features") or _width(graph_input.shape)
        if not isinstance(n, int):
            raise ModelRefused(f"ONNX input {graph_input.name!r} has no fixed feature count {graph_input.shape}")
        self.predict_ndim = int(server.get("predict_ndim", 1))
        self.allow_nan = bool(server.get("allow_nan", False))
        self.info = ModelInfo(
            n_features=n,
            feature_names=server.get("feature_names"),
            classes=server.get("classes"),
            outputs=tuple(o for o in OUTPUTS if o in self.output_names),
            platform="onnxruntime_onnx",
        )

    def predict(self, rows: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        try:
            x = np.ascontiguousarray(rows, dtype=self.dtype)
        except (ValueError, TypeError) as exc:  # strings that are not numbers
            raise BadRequest(f"model rejected the input: {exc}") from None
        if not self.allow_nan and not np.isfinite(x).all():
            # The estimator refuses NaN and infinity (checked when it was published): so does this.
            raise BadRequest("model rejected the input: Input X contains NaN or infinity")
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        try:
            values = self.session.run([self.output_names[o] for o in outputs], {self.input_name: x})
        except InvalidArgument as exc:
            raise BadRequest(f"model rejected the input: {exc}") from None
        results = dict(zip(outputs, values))
        if "predict" in results and self.predict_ndim == 1:
            results["predict"] = results["predict"].reshape(-1)
        return results


# A one-op graph (Identity on a [1] double tensor, opset 13), serialized by onnx.helper: the
# session made of it at warm-up pays onnxruntime's once-per-process set-up (~15-20 ms measured),
# so that no model's first load does.
_WARM_GRAPH = (
    b'\x08\x08::\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x04warmZ\x0f\n\x01x\x12\n\n\x08\x08\x0b\x12\x04'
    b'\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x0b\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r'
)


def warm() -> None:
    """Import onnxruntime (~0.2 s) and run one session of a one-op graph, so that a model
    load later costs milliseconds (the pool does this before it reports ready)."""
    import onnxruntime as ort

    session = ort.InferenceSession(_WARM_GRAPH, _options(1), providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.zeros(1)})


def model_file(path: Path, fmt: str, root: Path) -> tuple[Path, str, bool]:
    return path, fmt, False


def load(data: bytes, file: Path, fmt: str, entry: Mapping[str, Any], settings: Any) -> OnnxRuntime:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(data, _options(settings.model_threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # not an ONNX file, or ops this onnxruntime lacks
        raise ModelRefused(f"cannot load {file.name!r}: {type(exc).__name__}: {exc}") from None
    server = entry.get("server")
    if not isinstance(server, Mapping):
        stored = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        try:
            server = json.loads(stored) if stored else {}
        except ValueError:
            raise ModelRefused(f"{file.name!r} has unreadable {METADATA_KEY} metadata") from None
    return OnnxRuntime(session, server)


def _options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # A spinning thread pool keeps cores busy between requests; a pod sized by its CPU share
    # (and a node shared with other scale-to-zero pods) should not pay for that.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No arena: it keeps the peak of the largest batch a session ever ran, per session (per
    # pooled model), where the memory admission (infer.admission) counts a request's memory
    # only while the request runs.
    options.enable_cpu_mem_arena = False
    return options


def _guess_outputs(names: list[str]) -> dict[str, str]:
    """skl2onnx's names: label + probabilities for classifiers, variable for regressors."""
    if "label" in names:
        return {"predict": "label", **({"predict_proba": "probabilities"} if "probabilities" in names else {})}
    return {"predict": names[0]} if names else {}


def _width(shape: list) -> int | None:
    return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
