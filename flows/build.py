"""The build flow: ingest -> validate -> split -> train -> export -> INT8 -> evaluate -> monitoring reference -> release -> gate."""

from __future__ import annotations

from prefect import flow

from flows.config import BuildConfig
from tasks.compress.steps import quantize_int8
from tasks.data.steps import ingest, prepare_source
from tasks.export.steps import evaluate_variants, export_fp32
from tasks.monitor.steps import monitoring_reference
from tasks.registry.release import Release
from tasks.registry.steps import gate, promote, publish, score_current_production
from tasks.train.steps import train


@flow(name="build", log_prints=True)
def build(config: BuildConfig = BuildConfig()) -> Release:
    """Build a classifier from raw images and release it; promote it if it passes the gate."""
    source = prepare_source(config.data, config.work_dir)
    snapshot = ingest(source, config.data, config.work_dir)
    trained = train(snapshot, config.train, config.work_dir)
    exported = export_fp32(trained, snapshot, config.evaluate)
    quantized = quantize_int8(exported, snapshot, config.quantize)
    evaluation = evaluate_variants(trained, exported, quantized, snapshot, config.evaluate)
    reference = monitoring_reference(snapshot, trained, evaluation, config.monitor)
    release = publish(
        config.store, config.model_name, snapshot, trained, evaluation, config.model_dump(mode="json"), reference
    )
    production = score_current_production(config.store, config.model_name, snapshot, config.work_dir)
    decision = gate(evaluation, production, config.gate, release)
    if decision.promote:
        return promote(config.store, release, decision)
    return release.model_copy(update={"gate_reason": decision.reason})


if __name__ == "__main__":
    from flows.cli import main

    raise SystemExit(main())
