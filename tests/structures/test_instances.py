"""Tests for workbench.structures.instances.Instances."""

import copy
import pickle

import pytest
import torch

from workbench.structures import Boxes, Instances


def _inst():
    return Instances(
        (10, 20),
        scores=torch.tensor([0.9, 0.5, 0.1]),
        pred_boxes=Boxes(torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])),
        names=["a", "b", "c"],
    )


def test_fields_set_get_has_remove():
    inst = Instances((10, 20))
    assert inst.image_size == (10, 20)
    inst.scores = torch.tensor([0.5, 0.6])
    inst.set("labels", torch.tensor([1, 2]))
    assert inst.has("scores") and inst.has("labels") and not inst.has("masks")
    assert "labels" in inst and "masks" not in inst
    assert inst.get("labels").tolist() == [1, 2]
    assert inst.scores is inst.get("scores")
    inst.remove("scores")
    assert not inst.has("scores")
    assert list(inst.get_fields()) == ["labels"]
    with pytest.raises(AttributeError, match="Cannot find field 'scores'"):
        inst.scores
    with pytest.raises(KeyError, match="scores"):
        inst.get("scores")
    with pytest.raises(KeyError, match="scores"):
        inst.remove("scores")


def test_get_fields_is_live():
    inst = _inst()
    inst.get_fields()["extra"] = torch.zeros(3)
    assert inst.has("extra")


def test_length_mismatch_names_the_field():
    inst = _inst()
    with pytest.raises(ValueError, match=r"'labels' of length 2 on Instances of length 3"):
        inst.labels = torch.tensor([1, 2])
    with pytest.raises(TypeError, match="'flag'"):
        inst.flag = 3


def test_private_attributes_are_not_fields():
    inst = _inst()
    inst._cache = "anything"
    assert inst._cache == "anything" and not inst.has("_cache")


def test_len_and_empty():
    assert len(_inst()) == 3
    with pytest.raises(NotImplementedError, match="Empty Instances"):
        len(Instances((5, 5)))
    zero = Instances((5, 5), scores=torch.zeros(0), pred_boxes=Boxes(torch.empty(0)))
    assert len(zero) == 0
    assert len(zero[torch.zeros(0, dtype=torch.bool)]) == 0
    assert "num_instances=0" in repr(zero)


def test_iter_raises():
    with pytest.raises(NotImplementedError, match="not iterable"):
        iter(_inst())


def test_getitem_int_gives_length_one():
    inst = _inst()
    one = inst[1]
    assert isinstance(one, Instances) and len(one) == 1
    assert one.scores.tolist() == [0.5]  # keeps the leading dim
    assert one.pred_boxes.tensor.tolist() == [[1.0, 1.0, 2.0, 2.0]]
    assert one.names == ["b"]
    assert one.image_size == (10, 20)
    assert inst[-1].scores.tolist() == [pytest.approx(0.1)]
    with pytest.raises(IndexError, match="out of range"):
        inst[3]
    with pytest.raises(IndexError):
        inst[-4]


def test_getitem_slice_mask_and_indices():
    inst = _inst()
    assert inst[1:].scores.tolist() == [0.5, pytest.approx(0.1)]
    assert inst[1:].names == ["b", "c"]
    # a list field cannot take a tensor index: keep only tensor-like fields
    inst.remove("names")
    confident = inst[inst.scores > 0.3]
    assert len(confident) == 2 and confident.pred_boxes.tensor[:, 0].tolist() == [0.0, 1.0]
    picked = inst[torch.tensor([2, 0])]
    assert picked.scores.tolist() == [pytest.approx(0.1), pytest.approx(0.9)]


def test_to_moves_fields_that_can_move():
    inst = _inst()
    moved = inst.to(inst.scores.device)
    assert moved.names == ["a", "b", "c"]  # lists carried over
    assert isinstance(moved.pred_boxes, Boxes)
    assert moved.scores.device == inst.scores.device
    as_double = Instances((1, 1), x=torch.zeros(2)).to(torch.float64)
    assert as_double.x.dtype == torch.float64


def test_cat():
    a = _inst()
    b = Instances(
        (10, 20),
        scores=torch.tensor([0.3]),
        pred_boxes=Boxes(torch.tensor([[5.0, 5, 6, 6]])),
        names=["d"],
    )
    c = Instances.cat([a, b])
    assert len(c) == 4
    assert c.scores.tolist() == pytest.approx([0.9, 0.5, 0.1, 0.3])
    assert isinstance(c.pred_boxes, Boxes) and c.pred_boxes.tensor[3].tolist() == [5, 5, 6, 6]
    assert c.names == ["a", "b", "c", "d"]
    assert Instances.cat([a]) is a


def test_cat_errors():
    a = _inst()
    with pytest.raises(ValueError, match="at least one"):
        Instances.cat([])
    with pytest.raises(ValueError, match=r"element 1 has image_size \(5, 5\)"):
        Instances.cat([a, Instances((5, 5), scores=torch.zeros(1))])
    with pytest.raises(ValueError, match="element 1 has fields"):
        Instances.cat([a, Instances((10, 20), scores=torch.zeros(1))])
    with pytest.raises(TypeError, match="element 1"):
        Instances.cat([a, "not instances"])
    with pytest.raises(TypeError, match="field 'x'"):
        Instances.cat([Instances((1, 1), x="ab"), Instances((1, 1), x="cd")])


def test_repr_summarises_instead_of_dumping():
    inst = _inst()
    dev = inst.scores.device
    assert repr(inst) == (
        "Instances(num_instances=3, image_height=10, image_width=20, fields=["
        f"scores: Tensor(shape=(3,), dtype=torch.float32, device={dev}), "
        "pred_boxes: Boxes(shape=(3, 4), dtype=torch.float32), "
        "names: list(len=3)])"
    )
    big = Instances((800, 800), masks=torch.zeros(100, 800, 800, dtype=torch.bool))
    assert len(repr(big)) < 200
    assert str(Instances((2, 3))) == (
        "Instances(num_instances=0, image_height=2, image_width=3, fields=[])"
    )


def test_copy_and_pickle():
    inst = _inst()
    for clone in (copy.deepcopy(inst), pickle.loads(pickle.dumps(inst))):
        assert clone.image_size == (10, 20)
        assert clone.scores.tolist() == inst.scores.tolist()
