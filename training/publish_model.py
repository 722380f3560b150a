"""Publish a scikit-learn model as ONNX, verified against the estimator before it is published.

    python -m training.publish_model path/to/model.joblib --out DIR [--rows rows.csv] [--name N] [--version V]

Writes DIR/<name>.onnx and its entry in DIR/manifest.json (sha256, and what the inference
server needs to describe the model without scikit-learn: input, feature count and names,
classes, outputs, example row). The conversion (skl2onnx; outputs `predict` and
`predict_proba` where the estimator has it, no ZipMap) is published only if onnxruntime gives,
on the verification rows, the same labels and probabilities / regression values as the
estimator within the stated tolerance; otherwise nothing is written and the command says why
(the joblib or skops file still serves the model, without the fast start).

Verification rows: `--rows` (CSV with a header, or .npy) should be rows the model was not
fitted on; without it the rows are drawn at random around the first scaler's statistics when
the model has one, else around zero, and the manifest says so. Loading a .joblib/.pkl runs
code: publish only your own files.
"""

from __future__ import annotations

import argparse
import json
import warnings
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infer.artifacts import MANIFEST
from fncommon.verified_file import sha256_of

warnings.filterwarnings("ignore", message="X does not have valid feature names")

RTOL = 1e-6
"""Relative tolerance for probabilities and regression values (labels must be equal)."""
ATOL = 1e-9
"""Absolute tolerance, for values near zero where a relative one means nothing."""
METADATA_KEY = "predictive_infer"  # read by functions/infer/infer/runtime_onnx.py
INPUT_TYPES = ("float64", "float32")
"""Tried in order: float64 keeps the estimator's arithmetic; float32 where onnxruntime's ML
operators (tree ensembles) only take float, which verification then has to accept."""


class ConversionRefused(Exception):
    """The model is not published as ONNX; the message says why."""


@dataclass(frozen=True)
class Published:
    entry: dict
    path: Path


def server_metadata(estimator: Any, input_name: str, input_type: str, outputs: dict[str, str], rows: np.ndarray) -> dict:
    names = getattr(estimator, "feature_names_in_", None)
    classes = getattr(estimator, "classes_", None)
    return {
        "input": input_name,
        "input_type": input_type,
        "n_features": int(estimator.n_features_in_),
        "feature_names": [str(n) for n in names] if names is not None else None,
        "classes": classes.tolist() if classes is not None else None,
        "outputs": outputs,
        "predict_ndim": int(np.asarray(estimator.predict(rows[:1])).ndim),
        "allow_nan": _accepts_nan(estimator, rows[:1]),
    }


def _accepts_nan(estimator: Any, row: np.ndarray) -> bool:
    probe = row.astype(np.float64).copy()
    probe[0, 0] = np.nan
    try:
        estimator.predict(probe)
    except ValueError:
        return False
    return True


def convert(estimator: Any, n_features: int, input_type: str) -> Any:
    """An ONNX ModelProto of the estimator, with outputs `label`(+`probabilities`) or `variable`."""
    from sklearn.base import is_classifier
    from skl2onnx import to_onnx

    sample = np.zeros((1, n_features), dtype=input_type)
    options = {"zipmap": False} if is_classifier(estimator) else None
    try:
        return to_onnx(estimator, sample, options=options)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConversionRefused(f"skl2onnx cannot convert {type(estimator).__name__}: {type(exc).__name__}: {first}") from None


def output_map(model: Any) -> dict[str, str]:
    names = [o.name for o in model.graph.output]
    if "label" in names:
        return {"predict": "label", **({"predict_proba": "probabilities"} if "probabilities" in names else {})}
    return {"predict": names[0]}


def verify(estimator: Any, onnx_bytes: bytes, rows: np.ndarray, input_type: str, outputs: dict[str, str]) -> dict:
    """Run both on the rows; raise ConversionRefused on any difference beyond the tolerance."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConversionRefused(f"onnxruntime cannot load the {input_type} conversion: {str(exc).splitlines()[0]}") from None
    (graph_input,) = session.get_inputs()
    got = dict(zip(outputs, session.run(list(outputs.values()), {graph_input.name: rows.astype(input_type)})))
    report: dict[str, Any] = {"rows": int(len(rows)), "rtol": RTOL, "atol": ATOL, "input_type": input_type}
    expected = np.asarray(estimator.predict(rows))
    label = got["predict"].reshape(expected.shape)
    if expected.dtype.kind in "iubOUS" or hasattr(estimator, "classes_"):
        wrong = int((label != expected).sum())
        report["label_mismatches"] = wrong
        if wrong:
            raise ConversionRefused(
                f"the {input_type} conversion gives different labels on {wrong} of {len(rows)} verification rows"
            )
    else:
        report.update(_compare("predict", label, expected))
    if "predict_proba" in outputs:
        report.update(_compare("predict_proba", got["predict_proba"], np.asarray(estimator.predict_proba(rows))))
    return report


def _compare(name: str, got: np.ndarray, expected: np.ndarray) -> dict:
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    rel = float((diff / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)).max()) if diff.size else 0.0
    if not np.allclose(got, expected, rtol=RTOL, atol=ATOL, equal_nan=True):
        raise ConversionRefused(
            f"{name} differs from the estimator's by up to {worst:.3g} (relative {rel:.3g}), "
            f"beyond rtol {RTOL} / atol {ATOL}"
        )
    return {f"{name}_max_abs_error": worst, f"{name}_max_rel_error": rel}


def publish_onnx(
    estimator: Any, out: Path, name: str, version: str | None, rows: np.ndarray, example: list,
    rows_origin: str = "held-back rows", input_types: tuple[str, ...] = INPUT_TYPES,
) -> Published:
    """Convert, verify, write `<name>.onnx` into `out`; returns its manifest entry."""
    import onnx
    import skl2onnx

    rows = np.asarray(rows, dtype=np.float64)
    if not hasattr(estimator, "n_features_in_"):
        raise ConversionRefused(f"{type(estimator).__name__} is not fitted (no n_features_in_)")
    if _accepts_nan(estimator, rows[:1]):
        # The server passes NaN to a model that accepts it: verify that the graph treats it alike.
        holes = rows[: min(len(rows), 20)].copy()
        holes[np.arange(len(holes)), np.arange(len(holes)) % holes.shape[1]] = np.nan
        rows = np.vstack([rows, holes])
    reasons = []
    for input_type in input_types:
        try:
            model = convert(estimator, int(estimator.n_features_in_), input_type)
            outputs = output_map(model)
            report = verify(estimator, model.SerializeToString(), rows, input_type, outputs)
        except ConversionRefused as exc:
            reasons.append(str(exc))
            continue
        report["rows_origin"] = rows_origin
        server = server_metadata(estimator, model.graph.input[0].name, input_type, outputs, rows)
        meta = model.metadata_props.add()
        meta.key, meta.value = METADATA_KEY, json.dumps(server)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        entry = {
            "path": path.name,
            "format": "onnx",
            "name": name,
            **({"version": version} if version else {}),
            "sha256": sha256_of(path),
            "example": np.asarray(example, dtype=np.float64).tolist(),
            "server": server,
            "verification": report,
            "converter": {"skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__,
                          "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import}},
        }
        return Published(entry, path)
    raise ConversionRefused("; ".join(dict.fromkeys(reasons)))


def merge_manifest(out: Path, entries: list[dict], refused: list[dict] | None = None) -> dict:
    """Add entries to out/manifest.json, replacing those with the same path."""
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"artifacts": []}
    paths = {e["path"] for e in entries}
    manifest["artifacts"] = [e for e in manifest.get("artifacts", []) if e.get("path") not in paths] + entries
    if refused:
        names = {r["name"] for r in refused}
        manifest["refused"] = [r for r in manifest.get("refused", []) if r.get("name") not in names] + refused
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_estimator(path: Path) -> Any:
    if path.suffix == ".skops":
        import skops.io as sio

        return sio.load(path, trusted=sio.get_untrusted_types(file=path))
    import joblib

    return joblib.load(path)


def read_rows(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    return np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float64, ndmin=2)


def random_rows(estimator: Any, count: int = 200, seed: int = 0) -> np.ndarray:
    """Rows around the first StandardScaler's mean and scale when there is one: verification
    then covers the region the model was fitted on, not just around zero."""
    n = int(estimator.n_features_in_)
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    mean = getattr(first, "mean_", None)
    scale = getattr(first, "scale_", None)
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((count, n))
    if mean is not None and scale is not None:
        rows = rows * scale + mean
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.publish_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a fitted scikit-learn model: .joblib, .pkl or .skops")
    parser.add_argument("--out", type=Path, required=True, help="directory for <name>.onnx and manifest.json")
    parser.add_argument("--name", help="model name clients use (default: the file's stem)")
    parser.add_argument("--version", help="model version (default: unversioned)")
    parser.add_argument("--rows", type=Path, help="verification rows the model was not fitted on (.csv with header, .npy)")
    args = parser.parse_args(argv)
    estimator = load_estimator(args.model)
    name = args.name or args.model.stem
    if args.rows:
        rows, origin = read_rows(args.rows), f"rows from {args.rows.name}"
    else:
        rows, origin = random_rows(estimator), "random rows (no --rows given)"
    try:
        published = publish_onnx(estimator, args.out, name, args.version, rows, rows[:1].tolist(), origin)
    except ConversionRefused as exc:
        print(f"not published as ONNX: {exc}", file=sys.stderr)
        print(f"serve {args.model.name} as it is (joblib/skops), with its sha256 in a manifest", file=sys.stderr)
        return 1
    merge_manifest(args.out, [published.entry])
    report = published.entry["verification"]
    print(f"onnx    {published.path}  sha256={published.entry['sha256'][:16]}...  verified on {report['rows']} "
          f"{origin} ({report['input_type']}, rtol {RTOL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def pinned_env(artifact: Path) -> dict[str, str]:
    """The environment that serves `artifact` with its digest pinned (MODEL_SHA256), read from
    the manifest `make models` / publish wrote beside it: what a deployment puts in the Service's
    env, where the artifact cannot change it. Empty when the manifest does not list it."""
    from infer.artifacts import find_manifest_entry

    artifact = Path(artifact).resolve()
    entry = find_manifest_entry(artifact.parent, artifact) or {}
    return {"MODEL_SHA256": str(entry["sha256"]).lower()} if "sha256" in entry else {}
