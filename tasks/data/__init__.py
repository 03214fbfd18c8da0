"""Data stage: sources, validation, split and snapshot."""

from tasks.data.config import EMBEDDED_DIGITS, DataConfig
from tasks.data.snapshot import DatasetSnapshot, DataValidationError, QuarantineEntry

__all__ = ["EMBEDDED_DIGITS", "DataConfig", "DataValidationError", "DatasetSnapshot", "QuarantineEntry"]
