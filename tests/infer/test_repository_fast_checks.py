"""The pool's start reads the manifest with a typed decode (each entry's fields, its blocks as
their JSON text) and checks every name and digest in two passes over all of them; a bad entry is
still found and named, what a load reads of an entry is what the manifest lists, and a file is
still verified when it loads, never before and never skipped."""

from __future__ import annotations

import json

import pytest
from infer.errors import ModelUnavailable
from infer.pool import ModelPool
from infer.repository import SERVED_KEYS, RepositoryRefused, read_repository
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
    ({"path": "a\tb.onnx"}, "control character"),  # a tab or newline would split the packed index
    ({"path": "a\nb.onnx"}, "control character"),
    ({"version": "1\n2"}, "control character"),
    ({"path": "../wine.onnx"}, "no path inside the repository"),
    ({"format": ["onnx"]}, "unknown format"),
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


def test_an_entry_that_is_not_an_object_is_named_though_the_typed_decode_refuses_the_manifest(models_dir, tmp_path):
    repo = make_repository(models_dir, tmp_path / "repo")
    many_entries(repo)
    manifest = json.loads((repo / "manifest.json").read_text())
    manifest["artifacts"][7] = "wine.onnx"
    (repo / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RepositoryRefused, match=r"artifacts\[7\]: is not an object"):
        read_repository(repo, ("onnx",), None)


def test_what_a_load_reads_of_an_entry_is_what_the_manifest_lists(models_dir, tmp_path):
    """The blocks are kept as the manifest's text and parsed at the load: the same values, the
    publisher's record (verification, converter) left out, the version as text."""
    repo = make_repository(models_dir, tmp_path / "repo")
    many_entries(repo)
    manifest = json.loads((repo / "manifest.json").read_text())
    listed = {e["name"]: e for e in manifest["artifacts"] if e["format"] == "onnx"}
    assert any("server" in e and "example" in e for e in listed.values())  # the blocks are exercised
    repository = read_repository(repo, ("onnx",), None)
    for (name, version), entry in repository.models.items():
        expected = {k: listed[name][k] for k in SERVED_KEYS if k in listed[name]}
        if "version" in expected:
            expected["version"] = str(expected["version"])
        assert entry.entry == expected, name
        assert version == expected.get("version")


def test_a_republished_block_makes_the_entry_compare_unequal(models_dir, tmp_path):
    repo = make_repository(models_dir, tmp_path / "repo")
    before = read_repository(repo, ("onnx",), None)
    manifest = json.loads((repo / "manifest.json").read_text())
    (wine,) = [e for e in manifest["artifacts"] if e["name"] == "wine" and e["format"] == "onnx"]
    wine["example"] = [[0.0] * 13]
    (repo / "manifest.json").write_text(json.dumps(manifest, indent=2))  # as make_repository writes it
    after = read_repository(repo, ("onnx",), None)
    key = ("wine", before.versions("wine")[-1])
    assert before.models[key] != after.models[key] and after.models[key].entry["example"] == [[0.0] * 13]
    assert before.models[("diabetes", before.versions("diabetes")[-1])] == \
        after.models[("diabetes", after.versions("diabetes")[-1])]
