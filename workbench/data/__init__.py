"""Data: image transforms (more to come: datasets, mappers)."""

from . import transforms

__all__ = ["transforms"]
