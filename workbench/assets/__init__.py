"""Files that ship with workbench: sample photographs (see ``photos/LICENSES.md``)."""

from __future__ import annotations

import os
from typing import List

__all__ = ["photo_path", "list_photos"]

_PHOTOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "photos")


def list_photos() -> List[str]:
    """Names of the shipped photographs (``"coffee"``, ``"chelsea"``, ``"rocket"``)."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(_PHOTOS) if f.endswith((".png", ".jpg")))


def photo_path(name: str) -> str:
    """Absolute path of a shipped photograph, by name without extension.

    Raises:
        KeyError: Unknown name; the message lists the shipped ones.
    """
    for ext in (".png", ".jpg"):
        path = os.path.join(_PHOTOS, name + ext)
        if os.path.isfile(path):
            return path
    raise KeyError(f"No shipped photo named {name!r}; shipped: {', '.join(list_photos())}.")
