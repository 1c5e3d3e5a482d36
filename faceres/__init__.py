"""faceres: restore faces in old and degraded photographs."""

__version__ = "0.1.0"
