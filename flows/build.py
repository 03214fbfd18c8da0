"""The build flow: ingest -> train -> export -> compress (distill -> prune -> INT8) -> evaluate -> release -> gate.

``python -m flows.build [--config FILE] [--set key.path=VALUE ...]`` builds and prints the variant table and the release.
"""

from __future__ import annotations

from prefect import flow
from prefect.states import Cancelled, State

from flows.config import BuildConfig
from flows.outcome import tag_run, unchanged
from flows.runner import fan_out
from tasks.caching import results_in
from tasks.compress.steps import distill_student, prune_model, quantize_int8
from tasks.data.steps import ingest, prepare_source, report_snapshot
from tasks.export.steps import evaluate_variants, export_fp32, report_evaluation
from tasks.monitor.steps import feedback_source, monitoring_reference
from tasks.registry.release import Release
from tasks.registry.steps import claim_cooldown, gate, promote, publish, score_current_production
from tasks.train.steps import report_training, train


@flow(name="build", log_prints=True)
def build(config: BuildConfig = BuildConfig()) -> Release | State:
    """Build a classifier from raw data and release it; promote it if it passes the gate.

    With ``cooldown_hours`` (set by the drift/performance trigger), the run first claims the
    model's retrain period in the store, and ends Cancelled, saying why, when another retrain holds
    it: one retrain per model per cool-down.

    Started again on the same ``work_dir`` (after a kill or a failure), it reuses what the last run
    finished (ingestion of unchanged files, training, compression, export, evaluation, the monitoring
    reference: each kept under ``work_dir/results`` by its inputs and code) and continues an
    interrupted training from its last epoch; the source, publishing and the gate always run.
    """
    if config.cooldown_hours:
        skip = claim_cooldown(config.store, config.model_name, config.cooldown_hours, config.reason)
        if skip:
            return Cancelled(message=skip)
    source = prepare_source(config.data, config.work_dir)
    if config.include_feedback:
        source = feedback_source(source, config.store, config.model_name, config.work_dir)
    kept = results_in(config.work_dir)  # what a rerun on this work_dir reuses
    snapshot = kept(ingest)(source, config.data, config.work_dir)
    # Reports run every time: a run whose steps were reused still shows its dataset, epochs and variants.
    report_snapshot(snapshot, source)
    trained = kept(train)(snapshot, config.train, config.work_dir)
    report_training(trained)
    stages = [kept(export_fp32)(trained, snapshot, config.evaluate)]
    plan, model = config.compress, trained
    if "distill" in plan.plan:
        model = kept(distill_student)(trained, snapshot, plan.distill, config.train)
        stages.append(kept(export_fp32)(model, snapshot, config.evaluate, stage="distilled"))
    if "prune" in plan.plan:
        stages.append(
            kept(prune_model)(model, stages[-1].stage, trained, snapshot, plan.prune, config.train, config.evaluate)
        )
    to_quantize = (stages if plan.int8.models == "every" else stages[-1:]) if "int8" in plan.plan else []
    quantized_per_stage = fan_out(
        kept(quantize_int8),
        [
            {"exported": stage, "snapshot": snapshot, "config": plan.int8, "accuracy_budget_pp": config.evaluate.policy.accuracy_budget_pp}
            for stage in to_quantize
        ],
        config.runner,
    )
    quantized = [variant for variants in quantized_per_stage for variant in variants]
    evaluation = kept(evaluate_variants)(trained, stages, quantized, snapshot, config.evaluate)
    report_evaluation(evaluation, stages, config.evaluate)
    reference = kept(monitoring_reference)(snapshot, trained, evaluation, config.reference)
    release = publish(
        config.store, config.model_name, snapshot, trained, evaluation, config.model_dump(mode="json"), reference
    )
    production = score_current_production(config.store, config.model_name, snapshot, config.work_dir)
    decision = gate(evaluation, trained, snapshot, production, config.gate, release, config.reason)
    if decision.promote:
        release = promote(config.store, release, decision)
        if release.promoted:
            tag_run("promoted")
            return release
    else:
        release = release.model_copy(update={"gate_reason": decision.reason})
    # A run that changed nothing in production (refused, or another build moved the alias first) says so in the
    # run list, not only in its logs.
    return unchanged("Kept production", f"kept production: {release.gate_reason}", release, tag="kept-production")


def summarize(config: BuildConfig, release: Release) -> str:
    """What the command line prints after a build: the variant table, the release, what it serves, the gate."""
    from tasks.registry.lineage import release_summary
    from tasks.registry.release import read_manifest
    from tasks.registry.store import open_store

    manifest = read_manifest(open_store(config.store), release.model, release.version)
    serve = f"serve production over HTTP: .venv/bin/python -m serve --model {release.model} --store {config.store.uri}"
    return "\n" + release_summary(manifest, release) + "\n" + serve


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.build``: exit 0 done, 2 a bad config or a failure the user can act on."""
    from flows.cli import run

    return run(build, BuildConfig, argv, summarize=summarize)


if __name__ == "__main__":
    raise SystemExit(main())
