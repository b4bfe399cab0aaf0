"""Index samplers for training (infinite, shuffled, sharded by rank) and inference (each index
once, split across ranks)."""

from .distributed_sampler import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler

__all__ = ["InferenceSampler", "RepeatFactorTrainingSampler", "TrainingSampler"]
