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
