"""Training data: aligned HQ faces, synthetic degradation, eye/mouth boxes."""

from .dataset import DatasetOpts, FaceDataset, IterationSampler
from .degradations import DEGRADATION_PRESETS, DegradationOpts, degrade, sample_params

__all__ = ["DEGRADATION_PRESETS", "DatasetOpts", "DegradationOpts", "FaceDataset", "IterationSampler", "degrade", "sample_params"]
