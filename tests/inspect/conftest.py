import sys
from pathlib import Path

import torch

# The fixtures' reference loader lives beside the parity tests.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "parity"))

# The machine is shared: one thread keeps these tests from oversubscribing the cores.
torch.set_num_threads(1)
