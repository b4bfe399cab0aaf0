import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# The cached fixture models of the inspection tests, and the reference loader they use.
sys.path.insert(0, str(Path(__file__).parents[1] / "inspect"))
sys.path.insert(0, str(Path(__file__).parents[1] / "parity"))
