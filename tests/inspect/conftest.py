import sys
from pathlib import Path


# The fixtures' reference loader lives beside the parity tests.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "parity"))
