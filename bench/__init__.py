"""Benchmarks of workbench: ``python -m bench`` (see :mod:`bench.run`) compares it with
torchvision on full-size R50-FPN Mask / Keypoint R-CNN and measures the embedded model and the
inspection layer; ``bench/inspect_bench.py`` and ``bench/vis_bench.py`` also run on their own.
Results are written under ``bench/results/`` (git-ignored)."""
