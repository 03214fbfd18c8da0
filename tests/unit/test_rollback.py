"""Rollback on the file:// store: previous or named version, verified first, recorded, refused clearly."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from flows.config import RollbackConfig
from flows.rollback import main as rollback_cli
from flows.rollback import rollback
from tasks.registry.aliases import move_alias, promote_if_unchanged, read_alias
from tasks.registry.config import StoreConfig
from tasks.registry.release import IntegrityError, publish_release
from tasks.registry.rollback import RollbackError, previous_version, roll_back
from tasks.registry.store import ConditionalWriteFailed, FileStore
from tests.conftest import release_draft


def publish(store: FileStore, root: Path, content: str) -> str:
    """A small complete version whose content (and so version) depends on ``content``."""
    folder = root / content
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_text(f"graph {content}")
    (folder / "labels.json").write_text('["a", "b"]')
    files = {"onnx-fp32/model.onnx": folder / "model.onnx", "labels.json": folder / "labels.json"}
    return publish_release(store, files, release_draft("m")).version


@pytest.fixture
def promoted(tmp_path: Path) -> tuple[FileStore, list[str]]:
    """Versions a, b, c promoted in that order: production is at c."""
    store = FileStore(tmp_path / "reg")
    versions = []
    for content in "abc":
        version = publish(store, tmp_path / "src", content)
        move_alias(store, "m", version, f"promote {content}", read_alias(store, "m"))
        versions.append(version)
    return store, versions


def test_rollback_walks_back_and_is_recorded(promoted, tmp_path: Path) -> None:
    store, (a, b, c) = promoted
    first = roll_back(store, "m", tmp_path / "work", reason="bad c", by="oncall@example")
    assert (first.from_version, first.to_version, first.verified_files) == (c, b, 2)
    # A second rollback goes further back instead of returning to the version just rolled back from.
    second = roll_back(store, "m", tmp_path / "work", reason="b too")
    assert (second.from_version, second.to_version) == (b, a)
    alias, _ = read_alias(store, "m")
    assert alias.version == a
    assert [(m.kind, m.from_version, m.to_version, m.reason) for m in alias.history[-2:]] == [
        ("rollback", c, b, "bad c"),
        ("rollback", b, a, "b too"),
    ]
    assert alias.history[-2].by == "oncall@example" and "@" in alias.history[-1].by
    with pytest.raises(RollbackError, match="no earlier version"):
        roll_back(store, "m", tmp_path / "work")
    # Rolling forward is a named rollback, a "pin": it does not mark the version left as bad.
    assert roll_back(store, "m", tmp_path / "work", to_version=c).to_version == c
    alias, _ = read_alias(store, "m")
    assert alias.history[-1].kind == "pin"
    assert previous_version(alias) == a


def test_rollback_refuses_a_tampered_version_and_leaves_production(promoted, tmp_path: Path) -> None:
    store, (a, _, c) = promoted
    (tmp_path / "reg" / "models" / "m" / a / "onnx-fp32" / "model.onnx").write_text("graph evil")
    with pytest.raises(IntegrityError, match="onnx-fp32/model.onnx"):
        roll_back(store, "m", tmp_path / "work", to_version=a)
    assert read_alias(store, "m")[0].version == c


def test_rollback_refuses_missing_incomplete_current_and_aliasless(promoted, tmp_path: Path) -> None:
    store, (a, _, c) = promoted
    with pytest.raises(RollbackError, match=f"no complete version 0123456789ab.*{a}"):
        roll_back(store, "m", tmp_path / "work", to_version="0123456789ab")
    (tmp_path / "reg" / "models" / "m" / a / "manifest.json").unlink()  # as if its upload never finished
    with pytest.raises(RollbackError, match=f"no complete version {a}"):
        roll_back(store, "m", tmp_path / "work", to_version=a)
    with pytest.raises(RollbackError, match="already points at"):
        roll_back(store, "m", tmp_path / "work", to_version=c)
    with pytest.raises(RollbackError, match="nothing to roll back"):
        roll_back(FileStore(tmp_path / "empty"), "m", tmp_path / "work")
    with pytest.raises(ValueError, match="not allowed"):
        roll_back(store, "m", tmp_path / "work", to_version="../../etc")
    assert read_alias(store, "m")[0].version == c


def test_rollback_flow_and_cli(prefect_api, promoted, tmp_path: Path, capsys) -> None:
    store, (_, b, c) = promoted
    config = RollbackConfig(model_name="m", reason="flow", work_dir=tmp_path / "work", store=StoreConfig(uri=store.uri))
    result = rollback(config)
    assert (result.from_version, result.to_version) == (c, b)
    assert "flow run" in read_alias(store, "m")[0].history[-1].by
    cli = ["--set", "model_name=m", "--set", f"store.uri={store.uri}", "--set", f"work_dir={tmp_path / 'work'}"]
    assert rollback_cli([*cli, "--set", f"to_version={c}"]) == 0
    assert f"{b} -> {c}" in capsys.readouterr().out
    assert rollback_cli([*cli, "--set", f"to_version={c}"]) == 2
    refused = capsys.readouterr().err
    assert refused.startswith("rollback failed: ") and "already points at" in refused and "Traceback" not in refused
    assert rollback_cli([*cli, "--set", "to_version=../c"]) == 2
    assert "to_version" in capsys.readouterr().err
    assert read_alias(store, "m")[0].version == c


def test_racing_promotions_have_exactly_one_winner(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "reg")
    candidates = [publish(store, tmp_path / "src", str(i)) for i in range(6)]
    barrier = threading.Barrier(len(candidates))
    outcomes: dict[str, bool] = {}

    def release(version: str) -> None:
        expected = read_alias(store, "m")
        barrier.wait()  # everyone read the same (absent) alias before anyone writes
        try:
            move_alias(store, "m", version, "race", expected)
            outcomes[version] = True
        except ConditionalWriteFailed:
            outcomes[version] = False

    threads = [threading.Thread(target=release, args=(v,)) for v in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [v for v, won in outcomes.items() if won]
    assert len(winners) == 1
    alias, _ = read_alias(store, "m")
    assert alias.version == winners[0] and len(alias.history) == 1
    # A loser that re-gates against the new production is told why it was not promoted.
    loser = next(v for v in candidates if v != winners[0])
    promoted, why = promote_if_unchanged(store, "m", loser, "late", gated_against=None)
    assert not promoted and winners[0] in why
