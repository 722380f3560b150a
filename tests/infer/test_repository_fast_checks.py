"""The pool's start checks every manifest name and digest in two passes over all of them (a
10,000-entry repository starts in about a second); a bad entry is still found and named, and a
file is still verified when it loads, never before and never skipped."""

from __future__ import annotations

import json

import pytest
from infer.errors import ModelUnavailable
from infer.pool import ModelPool
from infer.repository import RepositoryRefused, read_repository
from infer.settings import InferSettings

from tests.infer.test_pool import make_repository

MANY = 300


def many_entries(repo, bad: dict | None = None, at: int = MANY // 2) -> None:
    """MANY copies of the wine entry under their own names (one file each is not needed: the
    manifest is what start reads), `bad` merged into entry `at`."""
    manifest = json.loads((repo / "manifest.json").read_text())
    (wine,) = [e for e in manifest["artifacts"] if e["name"] == "wine"]
    entries = [{**wine, "name": f"m{i:05d}"} for i in range(MANY)]
    if bad is not None:
        entries[at].update(bad)
    manifest["artifacts"] += entries
    (repo / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("bad, said", [
    ({"name": "a\nb"}, "DNS label"),  # two valid labels once joined by the batch check's newline
    ({"name": "wine\n"}, "DNS label"),
    ({"name": "Wine"}, "DNS label"),
    ({"name": "a" * 64}, "DNS label"),
    ({"name": None}, "DNS label"),
    ({"sha256": "ab" * 31 + "\nab"}, "sha256"),
    ({"sha256": "g" * 64}, "sha256"),
    ({"sha256": "a" * 63}, "sha256"),
])
def test_one_bad_entry_among_many_is_refused_and_named(models_dir, tmp_path, bad, said):
    repo = make_repository(models_dir, tmp_path / "repo")
    many_entries(repo, bad)
    with pytest.raises(RepositoryRefused) as refused:
        read_repository(repo, ("onnx",), None)
    message = str(refused.value)
    assert said in message
    assert f"artifacts[{len(json.loads((repo / 'manifest.json').read_text())['artifacts']) - MANY + MANY // 2}]" in message


def test_a_valid_large_manifest_passes_the_batch_check_and_keeps_every_entry(models_dir, tmp_path):
    repo = make_repository(models_dir, tmp_path / "repo")
    many_entries(repo)
    repository = read_repository(repo, ("onnx",), None)
    assert {f"m{i:05d}" for i in range(MANY)} <= set(repository.names)
    assert repository.models[("m00007", repository.versions("m00007")[-1])].sha256 == \
        repository.models[("wine", repository.versions("wine")[-1])].sha256


def test_a_tampered_file_is_refused_at_load_under_the_fast_start(models_dir, tmp_path):
    repo = make_repository(models_dir, tmp_path / "repo", copies={"tampered": "wine"})
    many_entries(repo)
    data = bytearray((repo / "tampered.onnx").read_bytes())
    data[-1] ^= 0xFF
    (repo / "tampered.onnx").write_bytes(bytes(data))
    pool = ModelPool(InferSettings.from_env({"MODEL_REPOSITORY": str(repo)}))
    assert pool.verify(), pool.reason  # start reads the manifest only: the file is not read yet
    with pytest.raises(ModelUnavailable, match="sha256 of .tampered.onnx. is"):
        pool.load("tampered")
    assert pool.load("wine") is not None  # the others serve
