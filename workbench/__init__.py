"""workbench: detectron2's model-usage API in pure PyTorch + torchvision."""

__version__ = "0.1.0"
