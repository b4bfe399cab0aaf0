"""Benchmarks of workbench: ``python -m bench`` (see :mod:`bench.run`) compares it with
torchvision on full-size R50-FPN Mask / Keypoint R-CNN and measures the embedded model and the
inspection layer; ``bench/inspect_bench.py`` and ``bench/vis_bench.py`` also run on their own.
On a GPU, ``bench/cuda_bench.py`` compares the same pairs per precision switch, and
``bench/gpu_check.sh`` runs the tests, the parity suite and that bench there in one go.
Results are written under ``bench/results/`` (git-ignored)."""
