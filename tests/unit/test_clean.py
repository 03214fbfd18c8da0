"""Cleaning a work dir: what no build used lately goes; what a kept result names, what is recent or held stays."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prefect import flow, task
from pydantic import BaseModel

from flows.clean import clean
from flows.clean import main as clean_main
from flows.config import CleanConfig
from tasks.caching import (
    KEPT_RESULT, RESULTS_FOLDER, RUNS_FOLDER, SNAPSHOTS_FOLDER, STEP_KEY, computed_once, kept_value, remove_entries,
    results_in, reuse_lock, stale_entries, step_folder,
)

DAY = 86400.0
FITS: list[str] = []


class Fitted(BaseModel):
    weights: Path


@task(cache_key_fn=STEP_KEY)
def fit(run: Path) -> Fitted:
    FITS.append(run.name)
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.pt").write_bytes(b"weights " + run.name.encode())
    return Fitted(weights=run / "model.pt")


@flow
def build(work: Path, run: Path) -> Fitted:
    return results_in(work)(fit)(run)


def _age(path: Path, days: float) -> None:
    """Every file and folder at ``path`` last written ``days`` ago."""
    then = time.time() - days * DAY
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (then, then))


def _variants(run: Path, tag: str) -> Path:
    """A step folder in ``run`` as export writes it: computed once, its result kept beside its files."""
    folder = step_folder(run, "variants", tag=tag)

    def export() -> Fitted:
        (folder / "model.onnx").write_bytes(b"onnx " + tag.encode())
        return Fitted(weights=folder / "model.onnx")

    computed_once(folder, export)
    return folder


def _record_of(work: Path, path: Path) -> Path:
    return next(r for r in (work / RESULTS_FOLDER).iterdir() if not r.name.startswith(".") and kept_value(r).weights == path)


def test_what_no_build_used_lately_goes_and_the_rest_stays(prefect_api, tmp_path: Path) -> None:
    work = tmp_path / "work"
    runs = work / RUNS_FOLDER / "v1"
    FITS.clear()
    build(work, runs / "a")  # a run a build still reuses
    named_step = _variants(runs / "a", "named")
    build(work, named_step)  # a kept result that names a file in that step folder
    unnamed_step = _variants(runs / "a", "old-config")  # a step of a config no build runs any more
    build(work, runs / "b")  # a run only an old result names
    build(work, runs / "c")  # a run a process holds
    (runs / "c" / "train.lock").touch()
    build(work, work / RUNS_FOLDER / "v2" / "d")  # a run in progress: recent, not kept yet
    (work / SNAPSHOTS_FOLDER / "v0").mkdir(parents=True)
    (work / SNAPSHOTS_FOLDER / "v0" / "train.npy").write_bytes(b"\0" * 10_000)
    record_d = _record_of(work, work / RUNS_FOLDER / "v2" / "d" / "model.pt")
    record_d.unlink()
    for old in (runs / "a", runs / "b", runs / "c", work / SNAPSHOTS_FOLDER / "v0"):
        _age(old, 30)
    _age(_record_of(work, runs / "b" / "model.pt"), 30)
    _age(_record_of(work, runs / "c" / "model.pt"), 30)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(120)", str(runs / "c" / "train.lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        entries = stale_entries(work, 14 * DAY, time.time())
        going = {e.path for e in entries if e.remove}
        assert going == {
            _record_of(work, runs / "b" / "model.pt"), _record_of(work, runs / "c" / "model.pt"),
            runs / "b", unnamed_step, work / SNAPSHOTS_FOLDER / "v0",
        }
        why = {e.path: e.why for e in entries}
        assert why[runs / "a"] == "named by a kept result" and why[named_step] == "named by a kept result"
        assert why[runs / "c"] == "held by a running process"
        assert why[work / RUNS_FOLDER / "v2" / "d"].startswith("used ")
        assert all(path.exists() for path in going)  # listing deletes nothing

        removed, problems = remove_entries(work, entries, 14 * DAY, time.time())
        assert {e.path for e in removed} == going and problems == [] and not any(path.exists() for path in going)
        assert (runs / "a" / "model.pt").exists() and (named_step / "model.onnx").exists() and (runs / "c" / "model.pt").exists()
    finally:
        holder.kill()
        holder.wait()

    # What stayed is reused as before, and a reuse renews its time; what went is computed again.
    record_a = _record_of(work, runs / "a" / "model.pt")
    _age(record_a, 20)
    FITS.clear()
    build(work, runs / "a")
    build(work, runs / "b")
    assert FITS == ["b"] and time.time() - record_a.stat().st_mtime < DAY
    _age(named_step, 20)
    _variants(runs / "a", "named")
    assert time.time() - (named_step / KEPT_RESULT).stat().st_mtime < DAY


def test_the_clean_command_lists_then_deletes_and_names_a_missing_work_dir(tmp_path: Path, capsys) -> None:
    work = tmp_path / "work"
    old = work / SNAPSHOTS_FOLDER / "v0"
    old.mkdir(parents=True)
    (old / "train.npy").write_bytes(b"\0" * 5000)
    _age(old, 30)
    assert clean_main(["--set", f"work_dir={work}"]) == 0
    out = capsys.readouterr().out
    assert "would remove 1 entries unused for 14 days" in out and "snapshots/v0" in out and old.exists()
    assert clean_main(["--set", f"work_dir={work}", "--set", "apply=true"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out and not old.exists()
    assert clean_main(["--set", f"work_dir={work}"]) == 0
    assert "nothing in" in capsys.readouterr().out
    assert clean_main(["--set", f"work_dir={tmp_path / 'nowhere'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_the_clean_flow_the_deployment_runs_deletes_and_returns_its_report(prefect_api, tmp_path: Path) -> None:
    work = tmp_path / "work"
    old, recent = work / SNAPSHOTS_FOLDER / "v0", work / SNAPSHOTS_FOLDER / "v1"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "train.npy").write_bytes(b"\0" * 5000)
    _age(old, 30)
    report = clean(CleanConfig(work_dir=work, apply=True))
    assert report.startswith("removed 1 entries unused for 14 days") and "snapshots/v0" in report
    assert not old.exists() and (recent / "train.npy").exists()
    # A scheduled run where no build ran yet completes, saying so (a failed run would raise an alert).
    state = clean(CleanConfig(work_dir=tmp_path / "never-built", apply=True), return_state=True)
    assert state.is_completed() and state.name == "Nothing to clean" and "does not exist" in state.message


def test_a_relative_path_a_build_kept_protects_its_folder_from_a_clean_run_elsewhere(
    prefect_api, tmp_path: Path, monkeypatch
) -> None:
    # Builds run with the default relative work dir (.lepton/work) keep relative paths; a clean run from
    # another folder, with the work dir given in full, must still see what they name.
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    work = Path(".lepton/work")
    build(work, work / RUNS_FOLDER / "v1" / "a")
    _age(project / work / RUNS_FOLDER / "v1" / "a", 30)
    monkeypatch.chdir(tmp_path)
    entries = stale_entries(project / work, 14 * DAY, time.time())
    assert not any(e.remove for e in entries)
    assert {e.path.name: e.why for e in entries}["a"] == "named by a kept result"


def test_an_unreadable_kept_result_in_use_keeps_every_folder_and_links_are_left_alone(tmp_path: Path) -> None:
    work = tmp_path / "work"
    old = work / SNAPSHOTS_FOLDER / "v0"
    old.mkdir(parents=True)
    (old / "train.npy").write_bytes(b"\0" * 5000)
    _age(old, 30)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.npy").write_bytes(b"\0")
    _age(elsewhere, 30)
    (work / SNAPSHOTS_FOLDER / "v9").symlink_to(elsewhere)
    (work / RESULTS_FOLDER).mkdir()
    record = work / RESULTS_FOLDER / ("ab" * 32)
    record.write_text("written by another serializer")
    (work / RESULTS_FOLDER / ".gitignore").write_text("*")  # not a record: neither read nor removed
    why = {e.path.name: (e.remove, e.why) for e in stale_entries(work, 14 * DAY, time.time())}
    assert why["v0"][0] is False and why["v0"][1].startswith("a kept result in use cannot be read") and record.name in why["v0"][1]
    assert why["v9"] == (False, "a link: left alone") and ".gitignore" not in why
    _age(record, 30)  # once unused itself, it names nothing that matters
    entries = stale_entries(work, 14 * DAY, time.time())
    assert {e.path.name for e in entries if e.remove} == {record.name, "v0"}
    remove_entries(work, entries, 14 * DAY, time.time())
    assert not old.exists() and (elsewhere / "data.npy").exists()


def test_a_work_dir_moved_or_mounted_elsewhere_still_protects_what_its_results_name(prefect_api, tmp_path: Path) -> None:
    # Kept results hold the absolute paths of where the build ran (a container's mount, say).
    built = tmp_path / "mounted" / "work"
    build(built, built / RUNS_FOLDER / "v1" / "a")
    _age(built / RUNS_FOLDER / "v1" / "a", 30)
    work = tmp_path / "host" / "work"
    work.parent.mkdir()
    built.rename(work)
    why = {e.path.name: (e.remove, e.why) for e in stale_entries(work, 14 * DAY, time.time())}
    assert why["a"] == (False, "named by a kept result")


def _one_unused_run(tmp_path: Path) -> tuple[Path, Path, Path, list]:
    """A work dir whose one training run and its kept result nobody used for 30 days, and the listing of both."""
    work = tmp_path / "work"
    run = work / RUNS_FOLDER / "v1" / "a"
    FITS.clear()
    build(work, run)
    record = _record_of(work, run / "model.pt")
    _age(run, 30)
    _age(record, 30)
    listed = stale_entries(work, 14 * DAY, time.time())
    assert {e.path for e in listed if e.remove} == {record, run}
    return work, run, record, listed


def test_what_a_build_reuses_after_the_listing_is_not_removed(prefect_api, tmp_path: Path) -> None:
    work, run, record, listed = _one_unused_run(tmp_path)
    build(work, run)  # a build reuses the run between the listing and the deletion
    assert FITS == ["a"]
    removed, problems = remove_entries(work, listed, 14 * DAY, time.time())
    assert removed == [] and (run / "model.pt").exists() and record.exists()
    assert any("reused since it was listed" in p for p in problems) and any("named by a kept result" in p for p in problems)
    # A linked dataset-version folder is not entered: what it holds lies outside the work dir.
    outside = tmp_path / "outside" / "b"
    outside.mkdir(parents=True)
    _age(outside.parent, 30)
    (work / RUNS_FOLDER / "v2").symlink_to(outside.parent)
    assert not any(e.path.name == "b" for e in stale_entries(work, 14 * DAY, time.time()))


def test_cleaning_and_a_build_taking_up_a_kept_result_wait_for_each_other(prefect_api, tmp_path: Path) -> None:
    """Cleaning's last check and delete, and a build's check and mark of a kept result, never interleave."""
    work, run, record, listed = _one_unused_run(tmp_path)

    # A build checking the kept result (the lock held shared): cleaning waits, then sees the result in use.
    outcome: list = []
    with reuse_lock(work / RESULTS_FOLDER, shared=True):
        cleaning = threading.Thread(target=lambda: outcome.append(remove_entries(work, listed, 14 * DAY, time.time())))
        cleaning.start()
        cleaning.join(2.0)
        assert cleaning.is_alive() and (run / "model.pt").exists() and record.exists()
        os.utime(record)  # the build marks it used
    cleaning.join(30)
    removed, problems = outcome[0]
    assert removed == [] and (run / "model.pt").exists() and record.exists()
    assert any("reused since it was listed" in p for p in problems) and any("named by a kept result" in p for p in problems)

    # Cleaning at its last check and delete (the lock held exclusively): a build waits, then computes again.
    with reuse_lock(work / RESULTS_FOLDER, shared=False):
        rebuild = threading.Thread(target=build, args=(work, run))
        rebuild.start()
        rebuild.join(2.0)
        assert rebuild.is_alive() and FITS == ["a"]
        record.unlink()
        for file in run.iterdir():
            file.unlink()
        run.rmdir()
    rebuild.join(60)
    assert not rebuild.is_alive() and FITS == ["a", "a"] and (run / "model.pt").read_bytes() == b"weights a"


def test_a_step_that_waited_on_a_lock_cleaning_deleted_holds_the_lock_now_in_its_place(tmp_path: Path) -> None:
    """A step folder's lock file removed with its run while a step waited for it: the step locks the new file,
    so another build waits for it instead of computing in the same folder beside it."""
    run = tmp_path / RUNS_FOLDER / "v1" / "a"
    folder = _variants(run, "x")
    lock = run / f".{folder.name}.lock"
    started, release = threading.Event(), threading.Event()

    def compute() -> Fitted:
        started.set()
        release.wait(30)
        (folder / "model.onnx").write_bytes(b"onnx again")
        return Fitted(weights=folder / "model.onnx")

    with open(lock, "a+") as cleaning:  # cleaning holds the folder's lock, as it does while it deletes
        fcntl.flock(cleaning, fcntl.LOCK_EX)
        step = threading.Thread(target=computed_once, args=(folder, compute))
        step.start()
        time.sleep(1.5)
        assert not started.is_set()  # waiting for the lock
        shutil.rmtree(run)
    try:
        assert started.wait(10)  # its result went with the run: computing again
        with open(lock, "a+") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        release.set()
        step.join(30)
    assert (folder / KEPT_RESULT).is_file() and (folder / "model.onnx").read_bytes() == b"onnx again"
