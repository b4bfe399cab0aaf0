import sys
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
# The cached fixture models of the inspection tests, and the reference loader they use.
sys.path.insert(0, str(Path(__file__).parents[1] / "inspect"))
sys.path.insert(0, str(Path(__file__).parents[1] / "parity"))

# The machine is shared: one thread keeps these tests from oversubscribing the cores.
torch.set_num_threads(1)
