"""Prefect tasks of the compression stage."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.compress.calibration import calibration_sample
from tasks.compress.config import QuantizeConfig
from tasks.compress.onnx_int8 import quantize_onnx_int8
from tasks.compress.openvino_int8 import quantize_openvino_int8
from tasks.data.snapshot import DatasetSnapshot
from tasks.export.evaluate import Variant
from tasks.export.steps import Exported
from tasks.train.datamodule import to_model_input


@task
def quantize_int8(exported: Exported, snapshot: DatasetSnapshot, config: QuantizeConfig) -> list[Variant]:
    """INT8 variants: ONNX Runtime static QDQ and NNCF, both calibrated on the train split."""
    if not config.enabled:
        return []
    logger = get_run_logger()
    by_name = {v.name: v for v in exported.variants}
    onnx_fp32, ov_fp32 = by_name["onnx-fp32"], by_name["openvino-fp32"]
    train_images, _ = snapshot.arrays("train")
    calibration = to_model_input(calibration_sample(train_images, config.calibration_size, config.seed))
    logger.info("calibrating INT8 on %d train images", len(calibration))
    root = onnx_fp32.directory.parent
    onnx_int8 = quantize_onnx_int8(
        onnx_fp32.directory / onnx_fp32.entrypoint,
        calibration,
        root / "onnx-int8" / "model.onnx",
        method=config.onnx_calibration_method,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
    )
    ov_int8 = quantize_openvino_int8(ov_fp32.directory / ov_fp32.entrypoint, calibration, root / "openvino-int8" / "model.xml")
    return [
        Variant(name="onnx-int8", runtime="onnxruntime", precision="int8", directory=onnx_int8.parent, entrypoint=onnx_int8.name),
        Variant(name="openvino-int8", runtime="openvino", precision="int8", directory=ov_int8.parent, entrypoint=ov_int8.name),
    ]
