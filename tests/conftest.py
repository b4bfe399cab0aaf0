"""Suite-wide settings."""

import os

import torch

# Under pytest-xdist every worker is its own process: give each one thread so that workers do
# not oversubscribe the cores (two workers x two threads on two cores is several times slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
