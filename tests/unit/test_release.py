"""Releases on the file:// store: manifest last, invisible until complete, verified, aliases conditional."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.registry.aliases import move_alias, read_alias
from tasks.registry.release import (
    IntegrityError,
    content_version,
    download_release,
    list_versions,
    publish_release,
    read_manifest,
)
from tasks.registry.store import ConditionalWriteFailed, FileStore, ObjectNotFound
from tests.conftest import release_draft


class RecordingStore(FileStore):
    """A real FileStore that records the order of writes and can fail at the n-th one."""

    def __init__(self, root: Path, fail_at: int | None = None) -> None:
        super().__init__(root)
        self.writes: list[str] = []
        self.fail_at = fail_at

    def _record(self, key: str) -> None:
        if self.fail_at is not None and len(self.writes) == self.fail_at:
            raise ConnectionError(f"injected failure before writing {key}")
        self.writes.append(key)

    def put_file(self, local: Path, key: str, sha256: str, **kwargs) -> None:
        self._record(key)
        super().put_file(local, key, sha256, **kwargs)

    def put_bytes(self, key: str, data: bytes, **kwargs) -> str:
        self._record(key)
        return super().put_bytes(key, data, **kwargs)


@pytest.fixture
def release_files(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    (src / "onnx-fp32").mkdir(parents=True)
    (src / "onnx-fp32" / "model.onnx").write_bytes(b"graph" * 100)
    (src / "onnx-fp32" / "model.onnx.data").write_bytes(b"weights" * 1000)
    (src / "history.json").write_text("[]")
    return {
        "onnx-fp32/model.onnx": src / "onnx-fp32" / "model.onnx",
        "onnx-fp32/model.onnx.data": src / "onnx-fp32" / "model.onnx.data",
        "training/history.json": src / "history.json",
    }


def test_manifest_is_written_last(tmp_path: Path, release_files) -> None:
    store = RecordingStore(tmp_path / "reg")
    release = publish_release(store, release_files, release_draft("m", config={"acc": 1.0}))
    assert store.writes[-1].endswith(f"{release.version}/manifest.json")
    assert len(store.writes) == len(release_files) + 1
    manifest = read_manifest(store, "m", release.version)
    assert {f.path for f in manifest.files} == set(release_files)
    assert manifest.config == {"acc": 1.0} and manifest.version == release.version


@pytest.mark.parametrize("fail_at", [0, 1, 2, 3])
def test_interrupted_release_is_invisible_and_a_retry_completes_it(tmp_path: Path, release_files, fail_at) -> None:
    broken = RecordingStore(tmp_path / "reg", fail_at=fail_at)
    with pytest.raises(ConnectionError):
        publish_release(broken, release_files, release_draft("m"))
    store = FileStore(tmp_path / "reg")
    assert list_versions(store, "m") == []
    version, _ = content_version(release_files)
    with pytest.raises(ObjectNotFound):
        read_manifest(store, "m", version)
    with pytest.raises(ObjectNotFound, match="no manifest"):
        move_alias(store, "m", version, "test", read_alias(store, "m"))
    release = publish_release(store, release_files, release_draft("m"))
    assert release.version == version
    assert [m.version for m in list_versions(store, "m")] == [version]


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_retry_resumes_without_sending_stored_files_again(tmp_path: Path, release_files, fail_at) -> None:
    with pytest.raises(ConnectionError):
        publish_release(RecordingStore(tmp_path / "reg", fail_at=fail_at), release_files, release_draft("m"))
    retry = RecordingStore(tmp_path / "reg")
    messages: list[str] = []
    release = publish_release(retry, release_files, release_draft("m"), progress=messages.append)
    sent_before = sorted(release_files)[:fail_at]
    assert [w.split(f"{release.version}/", 1)[1] for w in retry.writes] == [
        *sorted(set(release_files) - set(sent_before)),
        "manifest.json",
    ]
    assert (release.files_reused, release.files_uploaded) == (fail_at, len(release_files) - fail_at)
    assert any("not sent again" in m for m in messages)
    download_release(retry, "m", release.version, tmp_path / "dl", tmp_path / "cache")


def test_a_stored_file_with_other_content_is_sent_again(tmp_path: Path, release_files) -> None:
    with pytest.raises(ConnectionError):
        publish_release(RecordingStore(tmp_path / "reg", fail_at=2), release_files, release_draft("m"))
    version, _ = content_version(release_files)
    (tmp_path / "reg" / "models" / "m" / version / "onnx-fp32" / "model.onnx").write_bytes(b"half a file")
    release = publish_release(FileStore(tmp_path / "reg"), release_files, release_draft("m"))
    # model.onnx (damaged) goes again, model.onnx.data (intact) stays, history.json was never sent.
    assert (release.files_reused, release.files_uploaded) == (1, 2)
    download_release(FileStore(tmp_path / "reg"), "m", release.version, tmp_path / "dl", tmp_path / "cache")


def test_large_files_report_upload_progress(tmp_path: Path, release_files) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (9 * 2**20))
    messages: list[str] = []
    publish_release(FileStore(tmp_path / "reg"), {**release_files, "blob/big.bin": big}, release_draft("m"), messages.append)
    assert "[1/4] uploading blob/big.bin (9.0 MiB)" in messages
    assert "  blob/big.bin: 100% of 9.0 MiB" in messages
    assert sum("uploading" in m for m in messages) == 4


def test_same_content_is_the_same_immutable_version(tmp_path: Path, release_files) -> None:
    store = RecordingStore(tmp_path / "reg")
    first = publish_release(store, release_files, release_draft("m", config={"n": 1}))
    writes = len(store.writes)
    second = publish_release(store, release_files, release_draft("m", config={"n": 2}))
    assert second.version == first.version
    assert len(store.writes) == writes  # nothing rewritten
    assert read_manifest(store, "m", first.version).config == {"n": 1}


def test_download_verifies_and_caches(tmp_path: Path, release_files) -> None:
    store = FileStore(tmp_path / "reg")
    release = publish_release(store, release_files, release_draft("m"))
    dest = tmp_path / "dl"
    download_release(store, "m", release.version, dest, tmp_path / "cache")
    for rel, path in release_files.items():
        assert (dest / rel).read_bytes() == path.read_bytes()
    only = tmp_path / "only"
    download_release(store, "m", release.version, only, tmp_path / "cache", only="onnx-fp32")
    assert sorted(p.name for p in only.rglob("*") if p.is_file()) == ["model.onnx", "model.onnx.data"]


def test_tampered_file_is_refused_by_name(tmp_path: Path, release_files) -> None:
    store = FileStore(tmp_path / "reg")
    release = publish_release(store, release_files, release_draft("m"))
    target = tmp_path / "reg" / "models" / "m" / release.version / "onnx-fp32" / "model.onnx.data"
    target.write_bytes(b"evil" + target.read_bytes()[4:])
    with pytest.raises(IntegrityError, match="onnx-fp32/model.onnx.data"):
        download_release(store, "m", release.version, tmp_path / "dl", tmp_path / "cache")
    assert not (tmp_path / "dl" / "onnx-fp32" / "model.onnx.data").exists()


def test_alias_moves_are_conditional_and_keep_history(tmp_path: Path, release_files) -> None:
    store = FileStore(tmp_path / "reg")
    v1 = publish_release(store, release_files, release_draft("m")).version
    release_files["training/history.json"].write_text("[1]")
    v2 = publish_release(store, release_files, release_draft("m")).version
    stale = read_alias(store, "m")
    move_alias(store, "m", v1, "first", stale)
    with pytest.raises(ConditionalWriteFailed):
        move_alias(store, "m", v2, "racer holding a stale read", stale)
    move_alias(store, "m", v2, "better", read_alias(store, "m"))
    alias, _ = read_alias(store, "m")
    assert alias.version == v2
    assert [(h.from_version, h.to_version, h.reason) for h in alias.history] == [(None, v1, "first"), (v1, v2, "better")]


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "UPPER", "", "a..b", ".hidden"])
def test_unsafe_names_are_rejected(tmp_path: Path, release_files, name: str) -> None:
    store = FileStore(tmp_path / "reg")
    with pytest.raises(ValueError, match="not allowed"):
        publish_release(store, release_files, release_draft(name))
    assert not any((tmp_path / "reg").rglob("*.json"))


@pytest.mark.parametrize("key", ["../outside.json", "/abs.json", "a//b.json", "a/./b.json", "a\\b.json", "models/x\n.json"])
def test_file_store_refuses_keys_outside_its_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not a relative path"):
        FileStore(tmp_path / "reg").put_bytes(key, json.dumps({}).encode())
    assert not (tmp_path / "outside.json").exists() and not list((tmp_path / "reg").rglob("*.json"))


def test_release_folder_holds_only_released_files(tmp_path: Path, release_files) -> None:
    store = FileStore(tmp_path / "reg")
    release = publish_release(store, release_files, release_draft("m"))
    move_alias(store, "m", release.version, "first", read_alias(store, "m"))
    on_disk = sorted(
        p.relative_to(tmp_path / "reg" / "models" / "m" / release.version).as_posix()
        for p in (tmp_path / "reg" / "models" / "m" / release.version).rglob("*")
        if p.is_file()
    )
    assert on_disk == sorted([*release_files, "manifest.json"])
    assert store.list_keys("") == sorted(
        [f"models/m/{release.version}/{k}" for k in [*release_files, "manifest.json"]] + ["models/m/aliases/production.json"]
    )
