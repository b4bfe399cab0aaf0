"""Checkpoint paths, the download cache and checksums, against a local HTTP server."""

import functools
import hashlib
import http.server
import os
import pickle
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workbench.checkpoint import DetectionCheckpointer, catalog
from workbench.checkpoint.catalog import DownloadError


# ------------------------------------------------------------------------------------- helpers
class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = []  # paths asked for, shared by the server's threads

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (base_url, www, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = type("Handler", (_Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", www, handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_CACHE", str(path))
    return path


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2))


def d2_pickle_bytes(model) -> bytes:
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return pickle.dumps({"model": state, "__author__": "test"})


def publish(www: Path, relpath: str, data: bytes) -> Path:
    path = www / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def leftovers(folder: Path):
    return [p for p in folder.rglob("*") if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------- tests
def test_resolve_url():
    assert catalog.resolve_url("detectron2://ImageNetPretrained/MSRA/R-50.pkl") == (
        "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    )
    assert catalog.resolve_url("https://x.org/a.pth") == "https://x.org/a.pth"
    assert catalog.resolve_url("/tmp/a.pth") is None
    assert catalog.resolve_url("file:///tmp/a.pth") is None
    with pytest.raises(ValueError, match="s3://"):
        catalog.resolve_url("s3://bucket/a.pth")


def test_expected_hash():
    assert catalog.expected_hash("model_final_f10217.pkl") == ("md5", "f10217")
    assert catalog.expected_hash("https://h/x/137849600/model_final_f10217.pkl") == ("md5", "f10217")
    assert catalog.expected_hash("resnet50-0676ba61.pth") == ("sha256", "0676ba61")
    assert catalog.expected_hash("R-50.pkl") is None  # "50" is too short to be a hash
    assert catalog.expected_hash("model_final.pkl") is None
    assert catalog.expected_hash("model_final_f10217x.pkl") is None


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "c"))
    assert catalog.get_cache_dir() == str(tmp_path / "c")
    assert catalog.get_cache_dir("~/x") == os.path.expanduser("~/x")
    monkeypatch.delenv("WORKBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert catalog.get_cache_dir() == str(tmp_path / "xdg" / "workbench")
    url = "https://dl.fbaipublicfiles.com/detectron2/COCO/m/1/model_final_abcdef.pkl"
    assert catalog.cache_path_for_url(url, "/c") == os.path.join(
        "/c", "dl.fbaipublicfiles.com", "detectron2", "COCO", "m", "1", "model_final_abcdef.pkl"
    )
    with pytest.raises(ValueError):
        catalog.cache_path_for_url("https://h/a/../../etc/passwd", "/c")


def test_local_paths(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert catalog.get_local_path(str(f)) == str(f)
    assert catalog.get_local_path(f.as_uri()) == str(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        catalog.get_local_path(str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="folder"):
        catalog.get_local_path(str(tmp_path))


def test_detectron2_url_downloads_once_and_loads(server, cache, monkeypatch, capsys):
    base, www, requests = server
    monkeypatch.setattr(catalog, "DETECTRON2_PREFIX", base + "detectron2/")
    source = tiny_model()
    data = d2_pickle_bytes(source)
    name = f"model_final_{hashlib.md5(data).hexdigest()[:6]}.pkl"  # detectron2's convention
    publish(www, f"detectron2/COCO/mask_rcnn/123/{name}", data)

    model = nn.Sequential(nn.Linear(3, 2))
    ckpt = DetectionCheckpointer(model)
    ckpt.load(f"detectron2://COCO/mask_rcnn/123/{name}")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    assert ckpt.incompatible_keys.missing_keys == [] and ckpt.incompatible_keys.unexpected_keys == []

    cached = Path(catalog.cache_path_for_url(f"{base}detectron2/COCO/mask_rcnn/123/{name}"))
    assert cached.is_relative_to(cache) and cached.read_bytes() == data
    assert leftovers(cache) == []
    assert "100%" in capsys.readouterr().err  # the tqdm bar
    assert len(requests) == 1

    DetectionCheckpointer(nn.Sequential(nn.Linear(3, 2))).load(f"detectron2://COCO/mask_rcnn/123/{name}")
    assert len(requests) == 1, "a cached file must not be downloaded again"


def test_torchvision_style_sha256_name_and_query(server, cache):
    base, www, _ = server
    source = tiny_model()
    path = publish(www, "hub/tmp.pth", b"")
    torch.save({"0.weight": source[0].weight.data, "0.bias": source[0].bias.data}, path)
    data = path.read_bytes()
    name = f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    path.rename(www / "hub" / name)

    # The file's names lack the "layer." prefix the model has: matched by heuristics on request.
    model = nn.Sequential(nn.Sequential(nn.Linear(3, 2)))
    ckpt = DetectionCheckpointer(model)
    extra = ckpt.load(f"{base}hub/{name}?matching_heuristics=True")
    assert extra == {"matching_heuristics": True}
    assert torch.equal(model[0][0].weight, source[0].weight)
    assert ckpt.incompatible_keys.missing_keys == [] and ckpt.incompatible_keys.unexpected_keys == []


@pytest.mark.parametrize("name", ["model_final_000000.pkl", "tiny-00000000.pth"])
def test_checksum_mismatch_is_refused_and_nothing_is_cached(server, cache, name):
    base, www, _ = server
    publish(www, f"x/{name}", d2_pickle_bytes(tiny_model()))
    dst = Path(catalog.cache_path_for_url(f"{base}x/{name}"))
    with pytest.raises(DownloadError, match="Checksum mismatch") as err:
        catalog.get_local_path(f"{base}x/{name}", progress=False)
    assert str(dst) in str(err.value)
    assert not dst.exists()
    assert leftovers(cache) == []


def test_offline_error_names_url_and_cache_path(cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/detectron2/COCO/x/model_final_abcdef.pkl"
    with pytest.raises(DownloadError) as err:
        DetectionCheckpointer(tiny_model()).load(url)
    msg = str(err.value)
    assert url in msg
    assert catalog.cache_path_for_url(url) in msg
    assert leftovers(cache) == []


def test_http_error_is_reported(server, cache):
    base, _, _ = server
    with pytest.raises(DownloadError, match="404"):
        catalog.get_local_path(base + "missing/model.pth", progress=False)


def test_model_zoo_get_uses_the_checkpointer(cache):
    """model_zoo.get(trained=True) loads the detectron2 URL through the cache."""
    from workbench import model_zoo

    config = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    url = model_zoo.get_checkpoint_url(config)
    assert url.startswith("https://dl.fbaipublicfiles.com/detectron2/")
    # No internet here: put a (partial) checkpoint where the download would go.
    weight = np.random.default_rng(0).random((64, 3, 7, 7)).astype(np.float32)
    dst = Path(catalog.cache_path_for_url(url))
    dst.parent.mkdir(parents=True)
    dst.write_bytes(pickle.dumps(
        {"model": {"backbone.bottom_up.stem.conv1.weight": weight}, "__author__": "test"}
    ))
    model = model_zoo.get(config, trained=True, device="cpu")
    assert np.array_equal(model.backbone.bottom_up.stem.conv1.weight.detach().numpy(), weight)
