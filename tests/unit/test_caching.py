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
    assert len([p for p in (work / RESULTS_FOLDER).iterdir() if not p.name.startswith(".")]) == 1  # and the reuse lock
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


def test_a_step_folder_is_named_by_its_inputs(tmp_path: Path) -> None:
    from tasks.caching import step_folder

    a = step_folder(tmp_path, "int8", config={"calibration_size": 300}, budget=1.0)
    assert a == step_folder(tmp_path, "int8", budget=1.0, config={"calibration_size": 300})
    assert a.parent == tmp_path and a.name.startswith("int8-")
    assert a != step_folder(tmp_path, "int8", config={"calibration_size": 100}, budget=1.0)
    assert a != step_folder(tmp_path, "int8", config={"calibration_size": 300}, budget=2.0)


def _compute_in_child(folder: str, value: int, holding, log: str) -> None:  # noqa: ANN001 - a multiprocessing event
    """A process computing ``folder``: it appends its value to ``log`` when it computes; holds the folder a second."""
    import time

    from tasks.caching import computed_once

    def compute() -> Written:
        holding.set()
        with open(log, "a") as handle:
            handle.write(f"{value}\n")
        time.sleep(1.0)
        path = Path(folder) / "out.txt"
        path.write_text(str(value))
        return Written(path=path, value=value)

    result = computed_once(Path(folder), compute)
    with open(log, "a") as handle:
        handle.write(f"returned {result.value}\n")


def _computing(folder: Path, log: Path, value: int, holding_first: bool = True):  # noqa: ANN202 - a process
    """A process computing ``folder`` (see ``_compute_in_child``), returned once it holds the folder (``holding_first``)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    holding = context.Event()
    process = context.Process(target=_compute_in_child, args=(str(folder), value, holding, str(log)))
    process.start()
    if holding_first:
        assert holding.wait(30)
    return process


def test_a_step_folder_is_computed_once_by_concurrent_processes(tmp_path: Path) -> None:
    from tasks.caching import KEPT_RESULT, computed_once

    folder, log = tmp_path / "variants-abc", tmp_path / "log.txt"
    first = _computing(folder, log, 1)
    # The second process starts while the first holds the folder: it waits, then returns the first's result.
    second = _computing(folder, log, 2, holding_first=False)
    first.join(60)
    second.join(60)
    assert log.read_text().splitlines() == ["1", "returned 1", "returned 1"]
    assert (folder / "out.txt").read_text() == "1"
    # Kept: reused without computing, also by a process that did not wait (a build whose cache missed it).
    calls: list[int] = []

    def compute(value: int) -> Written:
        calls.append(value)
        (folder / "out.txt").write_text(str(value))
        return Written(path=folder / "out.txt", value=value)

    assert computed_once(folder, lambda: compute(3)).value == 1 and calls == []
    # A file the kept result names changed since: computed again (and kept anew).
    later = (folder / KEPT_RESULT).stat().st_mtime_ns + 1_000_000_000
    os.utime(folder / "out.txt", ns=(later, later))
    assert computed_once(folder, lambda: compute(4)).value == 4 and calls == [4]
    assert computed_once(folder, lambda: compute(5)).value == 4 and calls == [4]


def test_a_kept_step_result_comes_back_whole_not_measured_metrics_included(tmp_path: Path) -> None:
    import math

    from tasks.caching import computed_once
    from tasks.export.variants import Exported, Variant

    folder = tmp_path / "variants-abc"
    (folder / "onnx-fp32").mkdir(parents=True)
    (folder / "onnx-fp32" / "model.onnx").write_bytes(b"onnx")
    exported = Exported(variants=[Variant(name="onnx-fp32", runtime="onnxruntime", precision="fp32", directory=folder / "onnx-fp32", entrypoint="model.onnx")], parity=[])
    assert math.isnan(exported.variants[0].accuracy)  # not measured until evaluation
    assert computed_once(folder, lambda: exported) == exported
    again = computed_once(folder, lambda: pytest.fail("a kept result is computed again"))
    assert again.variants[0].directory == folder / "onnx-fp32" and math.isnan(again.variants[0].accuracy)


def test_a_process_waiting_for_one_that_dies_computes_the_step_itself(tmp_path: Path) -> None:
    import signal
    import threading
    import time

    from tasks.caching import computed_once

    folder = tmp_path / "int8-abc"
    doomed = _computing(folder, tmp_path / "log.txt", 1)
    waited: list[str] = []
    results: list[Written] = []
    waiter = threading.Thread(
        target=lambda: results.append(computed_once(folder, lambda: Written(path=folder / "out.txt", value=2), waited.append))
    )
    waiter.start()
    time.sleep(0.3)
    assert waited and not results  # held by the doomed process: waiting
    os.kill(doomed.pid, signal.SIGKILL)  # the lock goes with the process; no result was written
    doomed.join(30)
    waiter.join(30)
    assert [r.value for r in results] == [2]
