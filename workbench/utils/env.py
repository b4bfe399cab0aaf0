"""Process-wide settings: seeding every random number generator."""

from __future__ import annotations

import os
import random
from datetime import datetime
from typing import Optional

import numpy as np
import torch

__all__ = ["seed_all_rng"]


def seed_all_rng(seed: Optional[int] = None) -> int:
    """Seeds numpy's, torch's and Python's global generators.

    Args:
        seed: The seed; ``None`` draws one from the pid, the clock and ``os.urandom``.

    Returns:
        The seed used.
    """
    if seed is None:
        seed = (os.getpid() + int(datetime.now().strftime("%S%f"))
                + int.from_bytes(os.urandom(2), "big"))
    seed = int(seed) % 2 ** 32  # numpy accepts [0, 2**32)
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed
