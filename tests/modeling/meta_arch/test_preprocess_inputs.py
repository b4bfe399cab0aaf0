"""Bad model inputs get an error naming the image and the key (issue 18's first cases)."""

from __future__ import annotations

import pytest
import torch

from workbench.modeling.meta_arch.preprocess import check_batched_inputs


def _img():
    return torch.full((3, 8, 10), 100.0)


@pytest.mark.parametrize("value, where", [(float("nan"), "nan"), (float("inf"), "inf")])
def test_non_finite_pixels_are_refused(value, where):
    img = _img()
    img[1, 2, 3] = value
    with pytest.raises(ValueError, match=r"batched_inputs\[1\]\['image'\] has a non-finite value .* \(1, 2, 3\)"):
        check_batched_inputs([{"image": _img()}, {"image": img}], 3)


@pytest.mark.parametrize("value", [0, -64, 64.5, "64", True])
def test_impossible_output_sizes_are_refused(value):
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['height'\] must be a positive int"):
        check_batched_inputs([{"image": _img(), "height": value, "width": 10}], 3)


def test_good_inputs_pass():
    check_batched_inputs([{"image": _img(), "height": 16, "width": torch.tensor(20)},
                          {"image": torch.zeros(3, 4, 4, dtype=torch.uint8)}], 3)
