"""Export stage: ONNX and OpenVINO export, parity, variant evaluation and the serving policy."""

from tasks.export.config import EvaluateConfig
from tasks.export.evaluate import Variant, VariantPolicy

__all__ = ["EvaluateConfig", "Variant", "VariantPolicy"]
