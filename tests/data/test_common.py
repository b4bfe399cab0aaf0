"""MapDataset pickling (PicklableWrapper), DatasetFromList serialization, worker sharding,
build_batch_data_loader's options and get_detection_dataset_dicts with torch datasets."""

import pickle
import sys
import types

import pytest
import torch.utils.data as torchdata

from workbench.data import DatasetCatalog, build_batch_data_loader, get_detection_dataset_dicts
from workbench.data.common import (
    DatasetFromList,
    MapDataset,
    ToIterableDataset,
    set_default_dataset_from_list_serialize_method,
)
from workbench.data.samplers import InferenceSampler
from workbench.utils.serialize import PicklableWrapper


def double(x):
    return 2 * x


def test_map_dataset_pickles_with_module_level_function():
    ds = MapDataset(DatasetFromList([1, 2, 3]), double)
    assert isinstance(ds._map_func, PicklableWrapper)
    ds2 = pickle.loads(pickle.dumps(ds))
    assert isinstance(ds2, MapDataset)
    assert [ds2[i] for i in range(3)] == [2, 4, 6]


def test_map_dataset_pickles_a_lambda():
    # cloudpickle is a dependency: a lambda mapper reaches spawned workers, as in detectron2.
    ds = MapDataset(DatasetFromList([1, 2]), lambda x: x * 3)
    ds2 = pickle.loads(pickle.dumps(ds))
    assert [ds2[0], ds2[1]] == [3, 6]


def test_lambda_without_cloudpickle_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # import cloudpickle -> ImportError
    ds = MapDataset(DatasetFromList([1]), lambda x: x + 1)
    assert ds[0] == 2
    with pytest.raises(pickle.PicklingError, match="cloudpickle"):
        pickle.dumps(ds)


_FAKE_STORE = {}


def _fake_dumps(obj):
    _FAKE_STORE["obj"] = obj
    return b"key"


def _fake_loads(data):
    return _FAKE_STORE["obj"]


def test_picklable_wrapper_uses_cloudpickle_when_present(monkeypatch):
    fake = types.ModuleType("cloudpickle")
    fake.dumps, fake.loads = _fake_dumps, _fake_loads
    monkeypatch.setitem(sys.modules, "cloudpickle", fake)
    fn = lambda x: x * 10  # noqa: E731
    restored = pickle.loads(pickle.dumps(PicklableWrapper(PicklableWrapper(fn))))
    assert restored is fn and restored(2) == 20


def test_dataset_from_list_serialize_options():
    items = [{"a": [1]}, {"a": [2]}]
    ds = DatasetFromList(items)  # serialized: each read is a fresh copy
    assert ds[1] == {"a": [2]} and ds[1] is not items[1] and len(ds) == 2
    calls = []

    def as_tuple(lst):
        calls.append(len(lst))
        return tuple(lst)

    with set_default_dataset_from_list_serialize_method(as_tuple):
        ds = DatasetFromList(items)
    assert calls == [2] and ds[0] is items[0]  # stored by the custom method
    assert DatasetFromList(items, serialize=as_tuple)._lst == tuple(items)
    ds = DatasetFromList(items, copy=True, serialize=False)
    assert ds[0] == items[0] and ds[0] is not items[0]
    assert DatasetFromList(items, copy=False, serialize=False)[0] is items[0]
    with pytest.raises(TypeError, match="serialize"):
        DatasetFromList(items, serialize="yes")


def test_to_iterable_dataset_shards_in_chunks(monkeypatch):
    ds = ToIterableDataset(list(range(12)), InferenceSampler(12), shard_chunk_size=2)
    seen = []
    for wid in range(3):
        monkeypatch.setattr(torchdata, "get_worker_info", lambda wid=wid: types.SimpleNamespace(id=wid, num_workers=3))
        seen.append(list(ds))
    assert seen[0] == [0, 1, 6, 7] and seen[1] == [2, 3, 8, 9] and seen[2] == [4, 5, 10, 11]


def test_build_batch_data_loader_drop_last_and_single_gpu_batch_size():
    ds = DatasetFromList(list(range(5)))
    batches = list(build_batch_data_loader(ds, InferenceSampler(5), 2, drop_last=False))
    assert batches == [[0, 1], [2, 3], [4]]
    assert list(build_batch_data_loader(ds, InferenceSampler(5), 2)) == [[0, 1], [2, 3]]
    batches = list(build_batch_data_loader(ds, InferenceSampler(5), None, single_gpu_batch_size=3))
    assert batches == [[0, 1, 2]]
    with pytest.raises(ValueError, match="drop_last"):
        build_batch_data_loader(ds, InferenceSampler(5), 2, aspect_ratio_grouping=True, drop_last=False)


class _Squares(torchdata.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return i * i


def test_get_detection_dataset_dicts_returns_registered_torch_dataset_as_is():
    ds = _Squares()
    name = "common_test_torch_dataset"
    DatasetCatalog.register(name, lambda: ds)
    try:
        assert get_detection_dataset_dicts(name) is ds
        both = get_detection_dataset_dicts([name, name])
        assert isinstance(both, torchdata.ConcatDataset) and len(both) == 8
    finally:
        DatasetCatalog.remove(name)
