"""Prefect tasks of the compression stage: distil a student, prune and fine-tune, quantize to INT8."""

from __future__ import annotations

import shutil

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from tasks.caching import STEP_KEY, code_version, computed_once, fingerprint, step_folder
from tasks.compress.calibration import calibration_sample
from tasks.compress.config import DistillConfig, Int8Config, PruneConfig
from tasks.compress.distill import distill, teacher_fit_settings
from tasks.compress.onnx_int8 import quantize_onnx_int8
from tasks.compress.openvino_int8 import quantize_openvino_int8_within_budget
from tasks.compress.prune import prune_and_finetune
from tasks.data.snapshot import DatasetSnapshot
from tasks.export.config import EvaluateConfig
from tasks.export.fp32 import export_model
from tasks.export.variants import TRAINED_STAGE, Exported, Variant, variant_prefix
from tasks.train.config import TrainConfig
from tasks.train.models import resolve_model
from tasks.train.runs import resume_point
from tasks.train.trained import TrainedModel


@task(cache_key_fn=STEP_KEY)
def distill_student(teacher: TrainedModel, snapshot: DatasetSnapshot, config: DistillConfig, train: TrainConfig) -> TrainedModel:
    """Train ``config.student`` against the trained model's soft targets and the labels (Lightning)."""
    logger = get_run_logger()
    logger.info(
        "distilling %s into %s: temperature %.1f, alpha %.2f, up to %d epochs",
        teacher.model_name, resolve_model(config.student, snapshot.input, student=True), config.temperature, config.alpha, config.max_epochs,
    )
    folder = step_folder(
        teacher.state_dict_path.parent, "distill", snapshot=snapshot.version, config=config,
        train=teacher_fit_settings(train),
        teacher=fingerprint(teacher.state_dict_path), code=code_version(distill.__module__),
    )

    def distill_here() -> TrainedModel:
        # A distillation killed part way left its last epoch's checkpoint in this folder (named by these inputs and
        # code); continued, it ends with the weights of an uninterrupted one, so even a fresh build may continue it.
        resume, why = resume_point(folder, fresh=False)
        logger.info("distillation: %s", why)
        return distill(teacher, snapshot, config, train, folder, resume)

    student = computed_once(folder, distill_here, logger.info)
    logger.info(
        "student %s: test accuracy %.4f (teacher %.4f) after %d epochs",
        student.model_name, student.test_acc, teacher.test_acc, len(student.history),
    )
    return student


@task(cache_key_fn=STEP_KEY)
def prune_model(
    source: TrainedModel,
    source_stage: str,
    teacher: TrainedModel,
    snapshot: DatasetSnapshot,
    config: PruneConfig,
    train: TrainConfig,
    evaluate: EvaluateConfig,
) -> Exported:
    """Remove whole channels of ``source`` down to ``config.keep_macs`` of its MACs, fine-tune, export with parity.

    The stage is named after its source (``pruned``, ``distilled-pruned``); the
    pruned architecture exists only as these exports.
    """
    logger = get_run_logger()
    stage = "pruned" if source_stage == TRAINED_STAGE else f"{source_stage}-pruned"
    out_dir = step_folder(
        source.state_dict_path.parent, "prune", stage=stage, snapshot=snapshot.version, config=config,
        train=teacher_fit_settings(train), evaluate=evaluate,
        source=fingerprint(source.state_dict_path), teacher=fingerprint(teacher.state_dict_path),
        code=code_version(prune_and_finetune.__module__),
    )

    def prune_and_export() -> Exported:
        # A fine-tune killed part way left its last epoch's checkpoint here; pruning again gives the same architecture.
        resume, why = resume_point(out_dir, fresh=False) if config.finetune_epochs else (None, "")
        if why:
            logger.info("fine-tune after pruning: %s", why)
        model, pruned = prune_and_finetune(source, teacher, snapshot, config, train, out_dir, resume)
        logger.info(
            "%s: MACs %d -> %d (%.2f, target %.2f), parameters %d -> %d (%.2f); fine-tuned %d epochs, test accuracy %.4f",
            stage, pruned.result.macs_before, pruned.result.macs_after, pruned.result.macs_ratio, config.keep_macs,
            pruned.result.params_before, pruned.result.params_after, pruned.result.params_ratio,
            pruned.epochs_run, pruned.test_acc,
        )
        return export_model(model, stage, snapshot, out_dir / "variants", evaluate.parity_tolerance, logger.info)

    return computed_once(out_dir, prune_and_export, logger.info)


@task(cache_key_fn=STEP_KEY)
def quantize_int8(exported: Exported, snapshot: DatasetSnapshot, config: Int8Config, accuracy_budget_pp: float) -> list[Variant]:
    """INT8 variants of one model: ONNX Runtime static QDQ (per-channel) and NNCF, both calibrated on the train split.

    NNCF's accuracy-aware mode takes over when plain INT8 drops more than the
    budget on the validation split (``config.accuracy_control``); the test split
    stays untouched for the variant table.
    """
    logger = get_run_logger()
    by_runtime = {v.runtime: v for v in exported.variants if v.precision == "fp32"}
    onnx_fp32, ov_fp32 = by_runtime["onnxruntime"], by_runtime["openvino"]
    prefix = variant_prefix(exported.stage)
    # Named by the INT8 settings and the FP32 models: another build's calibration or budget writes elsewhere.
    root = step_folder(
        onnx_fp32.directory.parent, f"{prefix}int8", snapshot=snapshot.version, config=config, accuracy_budget_pp=accuracy_budget_pp,
        onnx=fingerprint(onnx_fp32.directory), openvino=fingerprint(ov_fp32.directory), code=code_version(__name__),
    )

    def quantize() -> list[Variant]:
        train_raw, _ = snapshot.arrays("train")
        calibration = snapshot.input.to_model_input(calibration_sample(train_raw, config.calibration_size, config.seed))
        logger.info("calibrating INT8 of %s on %d train examples", exported.stage, len(calibration))
        progress = create_progress_artifact(
            0.0, description=f"INT8 of {exported.stage}: calibrating ONNX Runtime on {len(calibration)} train examples"
        )
        onnx_int8 = quantize_onnx_int8(
            onnx_fp32.directory / onnx_fp32.entrypoint,
            calibration,
            root / f"{prefix}onnx-int8" / "model.onnx",
            method=config.onnx_calibration_method,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
        )
        update_progress_artifact(progress, 50.0, description=f"INT8 of {exported.stage}: ONNX Runtime done; NNCF (OpenVINO) calibrating")
        val_inputs, val_labels = snapshot.model_inputs("val")
        ov_int8 = quantize_openvino_int8_within_budget(
            ov_fp32.directory / ov_fp32.entrypoint,
            calibration,
            val_inputs,
            val_labels,
            accuracy_budget_pp,
            root / f"{prefix}openvino-int8" / "model.xml",
            accuracy_control=config.accuracy_control,
            preset=config.nncf_preset,
            fast_bias_correction=config.fast_bias_correction,
        )
        if ov_int8.plain_val_accuracy is not None:
            logger.info(
                "NNCF INT8 of %s on the validation split: %.4f vs FP32 %.4f", exported.stage, ov_int8.plain_val_accuracy, ov_int8.fp32_val_accuracy
            )
        if ov_int8.accuracy_control:
            logger.info(
                "NNCF accuracy control kept the sensitive layers in FP32: validation %.4f (drop %.2f pp, budget %.2f pp)",
                ov_int8.int8_val_accuracy, ov_int8.drop_pp, accuracy_budget_pp,
            )
        update_progress_artifact(progress, 100.0, description=f"INT8 of {exported.stage}: ONNX Runtime and NNCF done")
        common = {"precision": "int8", "stage": exported.stage, "macs": onnx_fp32.macs, "params": onnx_fp32.params}
        variants = [
            Variant(name=f"{prefix}onnx-int8", runtime="onnxruntime", directory=onnx_int8.parent, entrypoint=onnx_int8.name, **common),
            Variant(name=f"{prefix}openvino-int8", runtime="openvino", directory=ov_int8.path.parent, entrypoint=ov_int8.path.name, **common),
        ]
        if ov_int8.quantized_ops == 0:
            # An FP32 model under an INT8 name would mislead the table; its FP32 twin is already there.
            logger.warning(
                "%sopenvino-int8 left out: accuracy control had to keep every layer in FP32 to stay within %.2f pp",
                prefix, accuracy_budget_pp,
            )
            shutil.rmtree(ov_int8.path.parent, ignore_errors=True)
            variants.pop()
        return variants

    return computed_once(root, quantize, logger.info)
