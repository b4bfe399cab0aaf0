"""Where the reference fixtures are (the detectron2 0.6 outputs the parity tests compare against).

``$WORKBENCH_FIXTURES`` when set, else ``<repo>/../shared/fixtures``, where ``<repo>`` is the
folder holding the imported ``workbench`` package: the same place from any working directory, so
the tests, the benches and the notebooks find them from a copy of a notebook too::

    from workbench.utils.fixtures import fixture_folder
    folder = fixture_folder("mask_rcnn_R_50_FPN")     # .../fixtures/mask_rcnn_R_50_FPN
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "fixtures_dir", "fixture_folder"]

#: The environment variable that names the fixtures folder.
ENV_VAR = "WORKBENCH_FIXTURES"

_REPO = Path(__file__).resolve().parents[2]  # workbench/utils/fixtures.py -> the repo


def fixtures_dir() -> Path:
    """``$WORKBENCH_FIXTURES``, else ``<repo>/../shared/fixtures`` (absolute; may not exist)."""
    given = os.environ.get(ENV_VAR)
    return Path(given).expanduser().resolve() if given else (_REPO.parent / "shared" / "fixtures").resolve()


def fixture_folder(name: str) -> Path:
    """The folder of one fixture (e.g. ``"mask_rcnn_R_50_FPN"``); raises ``FileNotFoundError``
    naming where it looked, and how to point elsewhere, when it is not there."""
    root = fixtures_dir()
    folder = root / name
    if not folder.is_dir():
        where = f"${ENV_VAR}={os.environ[ENV_VAR]}" if os.environ.get(ENV_VAR) else \
            f"<repo>/../shared/fixtures, as ${ENV_VAR} is not set"
        raise FileNotFoundError(
            f"Reference fixture {name!r} not found: no folder {folder} ({where}). Set {ENV_VAR} "
            f"to the folder that holds the fixtures."
        )
    return folder
