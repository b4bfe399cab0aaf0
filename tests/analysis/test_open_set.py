"""Open-set metrics on a hand-built case whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis import OpenSetImage, energy_histogram, open_set_metrics

A, B, U = 0, 1, 7  # known classes a, b; class 7 held out as unknown

# image 1: object a, unknown object u. Detections: an a on u (0.95, not flagged: an open-set
# error that also outranks), the a on a (0.9, tp), u flagged unknown (0.7), a background a (0.6).
ONE = OpenSetImage(
    boxes=[[50, 50, 90, 90], [10, 10, 30, 30], [51, 50, 90, 91], [100, 0, 120, 20]],
    classes=[A, A, A, B], scores=[0.95, 0.9, 0.7, 0.6], unknown=[False, False, True, False],
    gt_boxes=[[10, 10, 30, 30], [50, 50, 90, 90]], gt_classes=[A, U])
# image 2: object b and an unknown nobody flags; a b on b (tp); an unknown flag on nothing.
TWO = OpenSetImage(
    boxes=[[0, 0, 20, 20], [60, 60, 70, 70]], classes=[B, B], scores=[0.8, 0.5],
    unknown=[False, True], gt_boxes=[[0, 0, 20, 20], [30, 30, 50, 50]], gt_classes=[B, U])


def test_open_set_metrics_by_hand():
    m = open_set_metrics([ONE, TWO], unknown_classes=[U])
    assert m.num_unknown_objects == 2
    assert m.a_ose == 1                       # the unflagged a on the unknown object
    # Class a reaches recall 0.8 with its top 2 (0.95 on u, 0.9 tp): 1 open fp, 1 closed tp;
    # class b with its top 1 (tp). WI = 1 / (1 + 1).
    assert (m.wi_open_fp, m.wi_closed_tp_fp) == (1, 2) and m.wi == pytest.approx(0.5)
    assert m.unknown_recall == pytest.approx(0.5)  # one of the two unknowns flagged
    # Unknown detections: 0.7 (tp), 0.5 (fp); 2 unknown objects: precision 1 to recall 0.5.
    assert m.unknown_ap == pytest.approx(100 * 51 / 101)
    assert "A-OSE 1" in repr(m)


def test_bad_open_set_input_is_named():
    with pytest.raises(ValueError, match="scores has 1 entries, expected 2"):
        OpenSetImage(boxes=[[0, 0, 1, 1], [0, 0, 2, 2]], classes=[0, 0], scores=[0.5],
                     unknown=[False, False], gt_boxes=np.zeros((0, 4)), gt_classes=[])
    with pytest.raises(ValueError, match="non-finite"):
        OpenSetImage(boxes=[[0, 0, np.nan, 1]], classes=[0], scores=[0.5], unknown=[False],
                     gt_boxes=np.zeros((0, 4)), gt_classes=[])
    with pytest.raises(ValueError, match="recall_level"):
        open_set_metrics([ONE], [U], recall_level=0)


def test_energy_histogram():
    fig = energy_histogram([-8.0, -7.5, -9.0], [-2.0, -1.0], threshold=-4.0)
    assert fig.drawn["counts"] == (3, 2) and fig.to_png_bytes()[:4] == b"\x89PNG"
