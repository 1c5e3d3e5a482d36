"""faceres: restore faces in old and degraded photographs."""

__version__ = "0.2.0.dev0"
