"""Resumable steps: the cache key (inputs, code, source files), reuse only while the files hold, forced recomputation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prefect import flow, task
from pydantic import BaseModel

import tasks.caching as caching
from tasks.caching import RESULTS_FOLDER, code_version, fingerprint, outdated, results_in, stable, step_key


class Written(BaseModel):
    path: Path
    value: int


CALLS: list[int] = []


@task(cache_key_fn=step_key(files=("source",)))
def write(source: Path, out_dir: Path, value: int) -> Written:
    CALLS.append(value)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{value}.txt"
    path.write_text(source.read_text() + str(value))
    return Written(path=path, value=value)


@flow
def twice(work_dir: Path, source: Path, value: int, keep: bool = True) -> Written:
    step = results_in(work_dir)(write) if keep else write
    return step(source, work_dir / "out", value)


def test_stable_forms_are_plain_json_and_refuse_live_objects() -> None:
    assert stable({"a": Written(path=Path("x/y"), value=1), "b": (Path("z"), None)}) == {
        "a": {"path": "x/y", "value": 1}, "b": ["z", None]
    }
    with pytest.raises(TypeError):
        stable(object())


def test_code_version_covers_what_a_module_imports_and_nothing_else(tmp_path: Path, monkeypatch) -> None:
    stage = tmp_path / "tasks" / "a"
    stage.mkdir(parents=True)
    (tmp_path / "tasks" / "__init__.py").write_text("")
    (stage / "__init__.py").write_text("")
    (stage / "steps.py").write_text("def f():\n    from tasks.a.core import g\n    return g()\n")
    (stage / "core.py").write_text("from tasks.shared import h\n\ndef g():\n    return 1\n")
    (tmp_path / "tasks" / "shared.py").write_text("h = 1\n")
    (tmp_path / "tasks" / "b.py").write_text("x = 1\n")
    monkeypatch.setattr(caching, "PROJECT", tmp_path)

    def version() -> str:
        code_version.cache_clear()
        return code_version("tasks.a.steps")

    first = version()
    assert version() == first
    (tmp_path / "tasks" / "b.py").write_text("x = 2\n")  # imported by nobody here
    assert version() == first
    (tmp_path / "tasks" / "shared.py").write_text("h = 2\n")  # imported two imports away, inside a function
    assert version() != first
    code_version.cache_clear()


def test_fingerprint_sees_a_rewrite_even_with_size_and_mtime_put_back(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    (folder / "cls").mkdir(parents=True)
    file = folder / "cls" / "x.png"
    file.write_bytes(b"aaaa")
    before = fingerprint(folder)
    assert fingerprint(folder) == before and fingerprint(tmp_path / "missing") is None
    stat = file.stat()
    file.write_bytes(b"bbbb")  # same size
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what cp -p or rsync -t do
    assert fingerprint(folder) != before  # the change time gives it away


def test_outdated_names_a_missing_or_later_written_file(tmp_path: Path) -> None:
    folder = tmp_path / "variant"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"1")
    result = [Written(path=folder, value=1)]
    written = (folder / "model.onnx").stat().st_mtime_ns
    assert outdated(result, written) is None
    assert "changed after" in outdated(result, written - 1)
    (folder / "model.onnx").unlink()
    folder.rmdir()
    assert "is gone" in outdated(result, written)


def test_a_step_is_reused_while_its_files_hold_and_recomputed_otherwise(prefect_api, tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("s")
    work = tmp_path / "work"
    CALLS.clear()
    first = twice(work, source, 1)
    assert twice(work, source, 1) == first and CALLS == [1]  # kept under work/results, by key
    assert len(list((work / RESULTS_FOLDER).iterdir())) == 1
    twice(work, source, 2)
    assert CALLS == [1, 2]  # other inputs, other key

    first.path.unlink()  # a deleted output is never handed on
    assert twice(work, source, 1).path.read_text() == "s1" and CALLS == [1, 2, 1]
    first.path.write_text("overwritten by another build")  # newer than the kept result
    assert twice(work, source, 1).path.read_text() == "s1" and CALLS == [1, 2, 1, 1]

    source.write_text("t")  # a changed source file
    assert twice(work, source, 1).path.read_text() == "t1" and CALLS == [1, 2, 1, 1, 1]
    assert twice(work, source, 1) and CALLS == [1, 2, 1, 1, 1]

    # Without a place to keep results a step computes every time and keeps nothing.
    twice(tmp_path / "other", source, 1, keep=False)
    assert CALLS[-1] == 1 and len(CALLS) == 6 and not (tmp_path / "other" / RESULTS_FOLDER).exists()


def test_refresh_recomputes_and_overwrites(prefect_api, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    source = tmp_path / "source.txt"
    source.write_text("s")
    CALLS.clear()
    twice(tmp_path / "work", source, 3)
    with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}):
        twice(tmp_path / "work", source, 3)
    twice(tmp_path / "work", source, 3)
    assert CALLS == [3, 3]
