"""Tests for workbench.structures.image_list.ImageList."""

import pytest
import torch

from workbench.structures import ImageList


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 5, 7, generator=g), torch.rand(3, 10, 4, generator=g)]


def test_from_tensors_pads_bottom_right_to_divisibility():
    imgs = _images()
    il = ImageList.from_tensors(imgs, size_divisibility=32, pad_value=-1.0)
    assert il.tensor.shape == (2, 3, 32, 32)
    assert il.image_sizes == [(5, 7), (10, 4)]
    assert all(isinstance(v, int) for hw in il.image_sizes for v in hw)
    for i, img in enumerate(imgs):
        h, w = img.shape[-2:]
        assert torch.equal(il.tensor[i, :, :h, :w], img)  # top-left corner, untouched
        padding = torch.ones(3, 32, 32, dtype=torch.bool)
        padding[:, :h, :w] = False
        assert (il.tensor[i][padding] == -1.0).all()


def test_from_tensors_without_divisibility_uses_max_size():
    il = ImageList.from_tensors(_images())
    assert il.tensor.shape == (2, 3, 10, 7)
    assert il.tensor[0, :, 5:, :].abs().sum() == 0  # default pad value 0
    assert ImageList.from_tensors(_images(), size_divisibility=1).tensor.shape == (2, 3, 10, 7)


def test_getitem_len_to_device():
    imgs = _images()
    il = ImageList.from_tensors(imgs, size_divisibility=8)
    assert len(il) == 2
    assert il[1].shape == (3, 10, 4) and torch.equal(il[1], imgs[1])
    assert il.device == imgs[0].device
    half = il.to(torch.float16)
    assert half.tensor.dtype == torch.float16 and half.image_sizes == il.image_sizes


def test_single_image_and_2d_images():
    img = torch.arange(6.0).reshape(2, 3)
    il = ImageList.from_tensors([img], size_divisibility=4, pad_value=7.0)
    assert il.tensor.tolist() == [[[0, 1, 2, 7], [3, 4, 5, 7], [7, 7, 7, 7], [7, 7, 7, 7]]]
    assert il.image_sizes == [(2, 3)]


def test_integer_images_keep_dtype():
    imgs = [
        torch.full((1, 2, 2), 200, dtype=torch.uint8),
        torch.full((1, 3, 1), 9, dtype=torch.uint8),
    ]
    il = ImageList.from_tensors(imgs)
    assert il.tensor.dtype == torch.uint8
    assert il.tensor[:, 0].tolist() == [[[200, 200], [200, 200], [0, 0]], [[9, 0], [9, 0], [9, 0]]]


def test_padding_constraints():
    imgs = _images()
    il = ImageList.from_tensors(imgs, padding_constraints={"square_size": 16})
    assert il.tensor.shape == (2, 3, 16, 16)
    # constraint divisibility overrides the argument
    il = ImageList.from_tensors(
        imgs, size_divisibility=32, padding_constraints={"size_divisibility": 4}
    )
    assert il.tensor.shape == (2, 3, 12, 8)
    # square first, then rounded up
    il = ImageList.from_tensors(
        imgs, padding_constraints={"square_size": 13, "size_divisibility": 8}
    )
    assert il.tensor.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="square_size=8 is smaller") as e:
        ImageList.from_tensors(imgs, padding_constraints={"square_size": 8})
    msg = str(e.value)
    assert "(10, 7)" in msg and "image 1 is (10, 4)" in msg
    assert "padding_constraints" in msg and "square_pad" in msg
    assert "max_size" in msg and "must not exceed 8" in msg


def test_errors_name_the_culprit():
    a = torch.zeros(3, 4, 4)
    with pytest.raises(ValueError, match=r"Image 1 has shape \(1, 4, 4\)"):
        ImageList.from_tensors([a, torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match=r"image 1 .* got \(4,\)"):
        ImageList.from_tensors([a, torch.zeros(4)])
    with pytest.raises(ValueError, match="at least one"):
        ImageList.from_tensors([])
    with pytest.raises(TypeError, match="list or tuple"):
        ImageList.from_tensors(torch.zeros(2, 3, 4, 4))
    with pytest.raises(TypeError, match="Image 0 is a list"):
        ImageList.from_tensors([[1, 2]])
