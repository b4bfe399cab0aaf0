"""Index samplers for training (infinite, shuffled, sharded by rank), inference (each index
once, split across ranks) and batching by group (aspect ratio)."""

from .distributed_sampler import (
    InferenceSampler,
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)
from .grouped_batch_sampler import GroupedBatchSampler

__all__ = [
    "GroupedBatchSampler", "InferenceSampler", "RandomSubsetTrainingSampler",
    "RepeatFactorTrainingSampler", "TrainingSampler",
]
