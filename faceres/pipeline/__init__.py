"""detect -> align -> restore -> paste."""

from .restorer import FaceRestorer, RestoredFace, RestoreResult

__all__ = ["FaceRestorer", "RestoreResult", "RestoredFace"]
