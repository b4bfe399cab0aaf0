"""Suite-wide settings."""

import torch

# One intra-op thread for the whole suite, set at import so that module- and session-scoped
# fixtures (cached models and traces) run with it too. The tests' convolutions are tiny and the
# machine is small and shared: with several threads they mostly wait on each other (2.5 s instead
# of 0.02 s per forward was measured), and two pytest-xdist workers with two threads each
# oversubscribe two cores. tests/parity/conftest.py sets two threads; the Makefile runs that suite
# in its own process.
torch.set_num_threads(1)
