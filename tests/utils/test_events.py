import json
import logging

import numpy as np
import pytest
import torch

from workbench.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    get_event_storage,
    has_event_storage,
)


def test_seed_snippet_runs():
    # The seeds' snippet, with a stand-in model that records a statistic like the real ones do.
    def model(inputs):
        get_event_storage().put_scalar("rpn/num_pos_anchors", 3)
        return {"loss": torch.tensor(1.5)}

    inputs = [{}]
    with EventStorage() as storage:
        losses = model(inputs)
    assert losses["loss"].item() == 1.5
    assert storage.latest()["rpn/num_pos_anchors"] == (3.0, 0)


def test_outside_storage_raises_clear_error():
    assert not has_event_storage()
    with pytest.raises(RuntimeError, match="EventStorage"):
        get_event_storage()


def test_nested_storages_and_exit_on_error():
    with EventStorage() as outer:
        with pytest.raises(ValueError):
            with EventStorage() as inner:
                assert get_event_storage() is inner
                raise ValueError("boom")
        assert get_event_storage() is outer
    assert not has_event_storage()


def test_put_scalar_history_latest_and_smoothing():
    with EventStorage(start_iter=5) as s:
        for v in [1.0, 3.0, 2.0]:
            s.put_scalar("loss", torch.tensor(v))
            s.put_scalar("lr", v * 10, smoothing_hint=False)
            s.step()
        assert s.iter == 8
        assert s.history("loss").values() == [(1.0, 5), (3.0, 6), (2.0, 7)]
        assert s.latest()["loss"] == (2.0, 7)
        smoothed = s.latest_with_smoothing_hint(window_size=3)
        assert smoothed["loss"] == (2.0, 7)  # median of 1, 3, 2
        assert smoothed["lr"] == (20.0, 7)  # not smoothed
        assert s.history("loss").global_avg() == pytest.approx(2.0)
        with pytest.raises(KeyError, match="loss"):
            s.history("missing")
        with pytest.raises(ValueError, match="smoothing_hint"):
            s.put_scalar("lr", 1.0, smoothing_hint=True)


def test_put_scalars_name_scope_and_cur_iter():
    with EventStorage() as s:
        s.put_scalars(a=1, b=2.5)
        with s.name_scope("stage1"):
            s.put_scalar("acc", 0.5, cur_iter=9)
        assert s.latest() == {"a": (1.0, 0), "b": (2.5, 0), "stage1/acc": (0.5, 9)}


def test_put_image_checks_shape():
    with EventStorage() as s:
        s.put_image("vis", np.zeros((3, 4, 5)))
        assert s.vis_data[0][0] == "vis" and s.vis_data[0][1].shape == (3, 4, 5)
        with pytest.raises(ValueError, match="vis2"):
            s.put_image("vis2", np.zeros((4, 5)))
        s.clear_images()
        assert s.vis_data == []


def test_json_writer_writes_only_new_iterations(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    writer = JSONWriter(str(path), window_size=1)
    with EventStorage() as s:
        s.put_scalar("loss", 1.0)
        writer.write()
        writer.write()  # nothing new
        s.step()
        s.put_scalar("loss", 0.5)
        writer.write()
    writer.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [{"iteration": 0, "loss": 1.0}, {"iteration": 1, "loss": 0.5}]


def test_common_metric_printer_logs_losses(caplog):
    printer = CommonMetricPrinter(max_iter=100, window_size=2)
    with EventStorage(start_iter=10) as s:
        s.put_scalar("loss_cls", 0.25)
        s.put_scalar("time", 0.5)
        s.put_scalar("lr", 0.01, smoothing_hint=False)
        with caplog.at_level(logging.INFO, logger="workbench"):
            printer.write()
    text = caplog.text
    assert "iter: 10" in text and "loss_cls: 0.25" in text and "lr: 0.01" in text
    assert "eta: 0:00:44" in text  # 0.5 s x (100 - 10 - 1) iterations


def test_smoothing_window_counts_iterations_not_samples(tmp_path):
    # Scalars put at different periods: the median covers the samples of the last 10 iterations
    # (detectron2's testSmoothingWithWindowSize).
    path = tmp_path / "metrics.json"
    writer = JSONWriter(str(path), window_size=10)
    with EventStorage() as s:
        for k in range(20):
            s.put_scalar("key1", k)
            if (k + 1) % 2 == 0:
                s.put_scalar("key2", k)
            if (k + 1) % 5 == 0:
                s.put_scalar("key3", k)
            if (k + 1) % 10 == 0:
                writer.write()
            s.step()
        counts = {k: s.count_samples(k, 10) for k in ["key1", "key2", "key3"]}
        assert counts == {"key1": 10, "key2": 5, "key3": 2}
        assert s.latest_with_smoothing_hint(10)["key3"] == (16.5, 19)
        with pytest.raises(KeyError, match="nope"):
            s.count_samples("nope")
    writer.close()
    data = [json.loads(x) for x in path.read_text().splitlines()]
    assert [d["key1"] for d in data] == [4.5, 14.5]
    assert [d["key2"] for d in data] == [5, 15]
    assert [d["key3"] for d in data] == [6.5, 16.5]


def test_count_samples_uses_the_latest_iteration_of_that_scalar():
    with EventStorage() as s:
        for it in (0, 1, 2, 10):
            s.put_scalar("x", it, cur_iter=it)
        # Iterations 10 - window_size < it <= 10 are in the window.
        assert s.count_samples("x", window_size=8) == 1
        assert s.count_samples("x", window_size=9) == 2
        assert s.count_samples("x", window_size=10) == 3


def test_common_metric_printer_logs_under_events_module_logger(caplog):
    with EventStorage() as s:
        s.put_scalar("time", 1.0)
        s.step()
        s.put_scalar("time", 1.0)
        s.step()
        with caplog.at_level(logging.INFO, logger="workbench.utils.events"):
            CommonMetricPrinter(10).write()
            CommonMetricPrinter().write()
    records = [r for r in caplog.records if r.name == "workbench.utils.events"]
    assert len(records) == 2
    assert "eta" in records[0].getMessage() and "eta" not in records[1].getMessage()
    assert "lr: N/A" in records[1].getMessage()


def test_common_metric_printer_prints_metric_scalars_and_times(caplog):
    with EventStorage() as s:
        for it, (bn, t, dt) in enumerate([(1.0, 0.5, 0.1), (3.0, 1.5, 0.3), (2.0, 1.0, 0.2)]):
            s.put_scalar("[metric]bn_stat", bn)
            s.put_scalar("other_scalar", 7.0)
            s.put_scalar("time", t)
            s.put_scalar("data_time", dt)
            s.step()
        with caplog.at_level(logging.INFO, logger="workbench.utils.events"):
            CommonMetricPrinter(window_size=2).write()
    text = caplog.records[-1].getMessage()
    assert "[metric]bn_stat: 2.5" in text  # median of iterations 1 and 2: (3.0 + 2.0) / 2
    assert "other_scalar" not in text
    assert "time: 1.0000" in text and "last_time: 1.0000" in text  # global average, latest
    assert "data_time: 0.2500" in text and "last_data_time: 0.2000" in text
