"""The former single-class trainer's names, kept for scripts and older imports. The loop lives in
`loop.py`; the per-family training models in `models.py` (`Trainer(opts, device)` builds the
model the options select: RestorationModel, SFMNetModel or PriorModel)."""

from .loop import Logger, init_distributed, latest_checkpoint, load_latest_checkpoint, train, validate
from .models import build_model as Trainer

__all__ = ["Logger", "Trainer", "init_distributed", "latest_checkpoint", "load_latest_checkpoint", "train", "validate"]
