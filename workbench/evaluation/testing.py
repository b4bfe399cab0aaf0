"""Reporting evaluation results: the "copypaste" log lines, checks against expected values,
and flattening nested result dicts."""

from __future__ import annotations

import logging
import pprint
import sys
from collections.abc import Mapping
from typing import Any, Dict

import numpy as np

__all__ = ["print_csv_format", "verify_results", "flatten_results_dict"]


def print_csv_format(results: Mapping) -> None:
    """Logs each task's main metrics (names without "-", i.e. not per-class) as two
    comma-separated lines, easy to paste into a spreadsheet.

    Args:
        results: ``{task: {metric: value}}``, e.g. ``{"bbox": {"AP": 38.2, "AP50": ...}}``.
    """
    if not (isinstance(results, Mapping) or not len(results)):
        raise TypeError(f"Expected a dict of results, got {results!r}.")
    logger = logging.getLogger(__name__)
    for task, res in results.items():
        if isinstance(res, Mapping):
            important_res = [(k, v) for k, v in res.items() if "-" not in k]
            logger.info("copypaste: Task: %s", task)
            logger.info("copypaste: " + ",".join(k for k, _ in important_res))
            logger.info("copypaste: " + ",".join(f"{v:.4f}" for _, v in important_res))
        else:
            logger.info("copypaste: %s=%s", task, res)


def verify_results(cfg, results: Mapping) -> bool:
    """Checks ``results`` against ``cfg.TEST.EXPECTED_RESULTS`` (``[[task, metric, expected,
    tolerance], ...]``); exits the process with status 1 on a mismatch.

    Returns:
        True if all match (or nothing is expected).
    """
    expected_results = cfg.TEST.EXPECTED_RESULTS
    if not len(expected_results):
        return True
    ok = True
    for task, metric, expected, tolerance in expected_results:
        actual = results[task].get(metric, None)
        if actual is None or not np.isfinite(actual) or abs(actual - expected) > tolerance:
            ok = False
    logger = logging.getLogger(__name__)
    if not ok:
        logger.error("Result verification failed!")
        logger.error("Expected Results: %s", expected_results)
        logger.error("Actual Results: %s", pprint.pformat(results))
        sys.exit(1)
    logger.info("Results verification passed.")
    return ok


def flatten_results_dict(results: Mapping) -> Dict[str, Any]:
    """``{"bbox": {"AP": 1}}`` -> ``{"bbox/AP": 1}`` (any depth)."""
    r: Dict[str, Any] = {}
    for k, v in results.items():
        if isinstance(v, Mapping):
            for kk, vv in flatten_results_dict(v).items():
                r[f"{k}/{kk}"] = vv
        else:
            r[k] = v
    return r
