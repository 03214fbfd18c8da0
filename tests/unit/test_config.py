"""Configs reject bad values at construction, naming the field and what is allowed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.config import BuildConfig, MonitorConfig, RollbackConfig, ScoreConfig
from tasks.data.config import DataConfig
from tasks.registry.config import StoreConfig
from tasks.train.config import TrainConfig


def _error(build, **kwargs) -> str:
    with pytest.raises(ValidationError) as info:
        build(**kwargs)
    return str(info.value)


def test_defaults_build_the_demo() -> None:
    config = BuildConfig()
    assert config.data.source == "embedded://digits"
    assert config.store.uri.startswith("file://")
    assert config.train.model == "auto" and config.compress.distill.student == "auto"  # small_cnn and tiny_cnn for images


@pytest.mark.parametrize(
    ("build", "kwargs", "field", "allowed"),
    [
        (DataConfig, {"channels": 2}, "channels", "1 (grayscale) or 3 (RGB)"),
        (DataConfig, {"image_size": 4}, "image_size", "greater than or equal to 8"),
        (DataConfig, {"val_fraction": 0.45, "test_fraction": 0.45}, "val_fraction", "below 0.8"),
        (DataConfig, {"source": "ftp://host/images"}, "source", "local folder"),
        (TrainConfig, {"model": "vgg"}, "model", "small_cnn"),
        (TrainConfig, {"max_epochs": 0}, "max_epochs", "greater than or equal to 1"),
        (TrainConfig, {"learning_rate": -1}, "learning_rate", "greater than 0"),
        (StoreConfig, {"uri": "gs://bucket/x"}, "uri", "file://path or s3://bucket/prefix"),
        (StoreConfig, {"uri": "s3://Bad_Bucket/x"}, "uri", "not a valid S3 bucket name"),
        (StoreConfig, {"sse": "aws:kms"}, "kms_key_id", "required"),
        (StoreConfig, {"sse": "DES"}, "sse", "'AES256'"),
        (StoreConfig, {"endpoint_url": "http://key:secret@minio:9000"}, "endpoint_url", "AWS credential chain"),
        (StoreConfig, {"endpoint_url": "minio:9000"}, "endpoint_url", "http(s)://host[:port]"),
        (StoreConfig, {"max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
        (RollbackConfig, {"to_version": "../v1"}, "to_version", "a-z, 0-9"),
        (ScoreConfig, {"source": "ftp://host/in"}, "source", "a local folder or s3://bucket/prefix"),
        (ScoreConfig, {"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        (MonitorConfig, {"window_hours": 0}, "window_hours", "greater than 0"),
        (MonitorConfig, {"drift": {"false_alarm_rate": 0.5}}, "drift.false_alarm_rate", "less than or equal to 0.2"),
        (MonitorConfig, {"drift": {"false_alarm_rate": 0.001}}, "drift", "at least 4999 permutations"),
        (MonitorConfig, {"drift": {"drift_share": 0.3}}, "drift", "['drift_share'] were removed: drift is now decided by two-sample tests"),
        (BuildConfig, {"reference": {"train_sample": 500}}, "reference", "train_sample was removed"),
        (BuildConfig, {"gate": {"min_accuracy": 1.5}}, "gate.min_accuracy", "less than or equal to 1"),
        (MonitorConfig, {"drift": {"min_rows": 1}}, "drift.min_rows", "greater than or equal to 10"),
        (BuildConfig, {"model_name": "../escape"}, "model_name", "a-z, 0-9"),
        (BuildConfig, {"modle_name": "typo"}, "modle_name", "Extra inputs are not permitted"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(build, kwargs, field, allowed) -> None:
    message = _error(build, **kwargs)
    assert field in message
    assert allowed in message


def test_nested_errors_carry_their_path() -> None:
    message = _error(BuildConfig.model_validate, obj={"train": {"batch_size": 0}})
    assert "train.batch_size" in message


def test_config_round_trips_through_json() -> None:
    config = BuildConfig(model_name="m1", train=TrainConfig(max_epochs=2))
    assert BuildConfig.model_validate_json(config.model_dump_json()) == config


def test_cli_rejects_a_bad_config_file_before_running(tmp_path, capsys) -> None:
    from flows.build import main

    path = tmp_path / "bad.json"
    path.write_text('{"data": {"channels": 4}}')
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "data.channels" in err and "1 (grayscale) or 3 (RGB)" in err
    assert main(["--config", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_overrides_are_dotted_paths_with_json_values(tmp_path) -> None:
    from flows.cli import load_config

    path = tmp_path / "build.json"
    path.write_text('{"model_name": "flowers", "train": {"max_epochs": 3, "batch_size": 8}}')
    config = load_config(
        BuildConfig, path, ["train.max_epochs=5", "compress.plan=[]", "store.uri=s3://bucket/ml", "reason=why not"]
    )
    assert (config.model_name, config.train.max_epochs, config.train.batch_size) == ("flowers", 5, 8)
    assert config.compress.plan == [] and config.store.uri == "s3://bucket/ml" and config.reason == "why not"
    # A value that reads as a JSON number stays text where the field is text (an all-digit version).
    rollback = load_config(RollbackConfig, None, ["to_version=123456789012", "reason=42", "model_name=2024"])
    assert (rollback.to_version, rollback.reason, rollback.model_name) == ("123456789012", "42", "2024")
    for bad, message in [
        ("train.max_epochs", "use KEY=VALUE"),
        ("model_name.first=x", "model_name is not a group of fields"),
        ("train.max_epochs=0", "train.max_epochs: Input should be greater than or equal to 1"),
        ("traim.max_epochs=3", "traim: Extra inputs are not permitted"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_config(BuildConfig, path, [bad])


def test_the_console_keeps_one_message_for_a_user_error_and_every_other_error() -> None:
    import logging

    from flows.cli import _ExpectedFailures
    from tasks.data.snapshot import DataValidationError
    from tasks.registry.rollback import RollbackError  # noqa: F401 - loaded, as a flow module loads its errors
    from tasks.registry.serving import NoProductionRelease  # noqa: F401

    quiet = _ExpectedFailures()

    def shown(message: str, error: BaseException | None = None) -> bool:
        exc_info = (type(error), error, None) if error else None
        return quiet.filter(logging.LogRecord("prefect.task_runs", logging.ERROR, "", 0, message, None, exc_info))

    # Prefect's own reports of a user error (the CLI prints its message once instead), in both quote styles.
    assert not shown("Task run failed with exception: DataValidationError('x') - Retries are exhausted", DataValidationError("x"))
    assert not shown('Finished in state Failed("Task run encountered an exception DataValidationError: found [\'only\']")')
    assert not shown("Finished in state Failed('Flow run encountered an exception: NoProductionRelease: none yet')")
    assert not shown("Encountered exception during execution: RollbackError('refused')", ValueError("wrapped"))
    # Anything else stays: other errors, and a user error's name in a message of our own.
    assert shown("Finished in state Failed('Task run encountered an exception ValueError: a bug')")
    assert shown("Task run failed with exception: ConnectionError('endpoint gone') - Retry 1/3", ConnectionError("x"))
    assert shown("the gate refused it: see DataValidationError in the report")
