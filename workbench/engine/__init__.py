"""Running models: ``DefaultPredictor`` for inference on single images."""

from .defaults import DefaultPredictor

__all__ = ["DefaultPredictor"]
