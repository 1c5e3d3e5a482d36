"""Training models by name: `train.mode: prior` trains the unconditional StyleGAN2 prior, otherwise
`network_g.arch` picks the restoration family."""

from __future__ import annotations

import torch

from .base import TrainingModel
from .options import Options, OptionsError
from .prior import PriorModel
from .restoration import RestorationModel
from .sfmnet import SFMNetModel

MODELS: dict[str, type[TrainingModel]] = {"prior": PriorModel, "codec_prior": RestorationModel, "sfmnet": SFMNetModel}


def model_name(opts: Options) -> str:
    return "prior" if opts.train.mode == "prior" else opts.network_g.arch


def build_model(opts: Options, device: torch.device, rank: int = 0, world: int = 1, log=print) -> TrainingModel:
    name = model_name(opts)
    if name not in MODELS:
        raise OptionsError(f"no training model for {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](opts, device, rank, world, log)
