"""Training stage: model zoo, data module, Lightning module and fit."""

from tasks.train.config import TrainConfig
from tasks.train.fit import EpochRecord, TrainedModel

__all__ = ["EpochRecord", "TrainConfig", "TrainedModel"]
