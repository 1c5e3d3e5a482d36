"""detect -> align -> restore -> paste, and the folder job."""

from .batch import BatchReport, restore_folder
from .options import RestoreOptions
from .restorer import FaceRestorer, RestoredFace, RestoreResult

__all__ = ["BatchReport", "FaceRestorer", "RestoreOptions", "RestoreResult", "RestoredFace", "restore_folder"]
