"""The tables with which a checkpointer reports keys that did not load."""

from __future__ import annotations

from typing import Dict, Iterable, List

__all__ = ["get_missing_parameters_message", "get_unexpected_parameters_message"]


def get_missing_parameters_message(keys: List[str]) -> str:
    """A table of the model keys the checkpoint did not provide, one row per module."""
    return "Some model parameters or buffers are not found in the checkpoint:\n" + _key_table(keys)


def get_unexpected_parameters_message(keys: List[str]) -> str:
    """A table of the checkpoint keys the model does not use, one row per module."""
    return "The checkpoint state_dict contains keys that are not used by the model:\n" + _key_table(keys)


def _key_table(keys: Iterable[str]) -> str:
    # "roi_heads.box_predictor.cls_score.weight", "...cls_score.bias"
    #   -> | roi_heads.box_predictor.cls_score | {weight, bias} |
    from tabulate import tabulate

    groups: Dict[str, List[str]] = {}
    for key in keys:
        head, dot, tail = key.rpartition(".")
        groups.setdefault(head if dot else key, []).extend([tail] if dot else [])
    rows = []
    for head, tails in sorted(groups.items()):
        names = "" if not tails else tails[0] if len(tails) == 1 else "{" + ", ".join(tails) + "}"
        rows.append((head, names))
    return tabulate(rows, headers=["Module", "Names"], tablefmt="pipe")
