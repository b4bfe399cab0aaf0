"""PathManager over the local file system, custom handlers, and the default prefixes.

Nothing here downloads: URL handlers are checked by where they would fetch from, and the
network is replaced by a fake ``urlopen`` where a download runs.
"""

import io
import os
import urllib.error

import pytest

from workbench.utils import file_io
from workbench.utils.file_io import (
    Detectron2Handler,
    HTTPURLHandler,
    PathHandler,
    PathManager,
    PathManagerBase,
)


class FakeHandler(PathHandler):
    """``fake://x`` is the file ``x`` under a local root; only local copies are supported."""

    PREFIX = "fake://"

    def __init__(self, root):
        self.root = str(root)
        self.asked = []

    def _get_supported_prefixes(self):
        return [self.PREFIX]

    def _get_local_path(self, path, force=False, **kwargs):
        self.asked.append(path)
        return os.path.join(self.root, path[len(self.PREFIX):])


def test_local_file_operations(tmp_path):
    pm = PathManagerBase()
    folder = tmp_path / "a" / "b"
    pm.mkdirs(folder)
    pm.mkdirs(folder)  # no error when it exists
    assert pm.isdir(folder) and not pm.isfile(folder)
    f = folder / "x.txt"
    with pm.open(f, "w") as fh:
        fh.write("hello")
    assert pm.exists(f) and pm.isfile(f)
    with pm.open(str(f)) as fh:
        assert fh.read() == "hello"
    with pm.open(f, "rb") as fh:
        assert fh.read() == b"hello"
    assert pm.ls(folder) == ["x.txt"]
    assert pm.get_local_path(f) == str(f)
    assert pm.copy(f, folder / "y.txt") is True
    assert (folder / "y.txt").read_text() == "hello"
    with pytest.raises(FileExistsError, match="y.txt"):
        pm.copy(f, folder / "y.txt")
    f.write_text("new")
    pm.copy(f, folder / "y.txt", overwrite=True)
    assert (folder / "y.txt").read_text() == "new"
    pm.rm(f)
    assert not pm.exists(f) and sorted(pm.ls(folder)) == ["y.txt"]


def test_custom_handler_routes_its_prefix(tmp_path):
    (tmp_path / "cfg.yaml").write_text("A: 1\n")
    pm = PathManagerBase()
    handler = FakeHandler(tmp_path)
    pm.register_handler(handler)
    assert pm.get_local_path("fake://cfg.yaml") == str(tmp_path / "cfg.yaml")
    with pm.open("fake://cfg.yaml") as fh:  # the base class opens the local copy for reading
        assert fh.read() == "A: 1\n"
    assert handler.asked == ["fake://cfg.yaml", "fake://cfg.yaml"]
    with pytest.raises(NotImplementedError, match="FakeHandler.*open.*fake://cfg.yaml"):
        pm.open("fake://cfg.yaml", "w")
    with pytest.raises(NotImplementedError, match="FakeHandler.*exists"):
        pm.exists("fake://cfg.yaml")
    # Paths without the prefix stay local.
    assert pm.isfile(tmp_path / "cfg.yaml")


def test_copy_across_handlers_is_refused(tmp_path):
    pm = PathManagerBase()
    pm.register_handler(FakeHandler(tmp_path))
    with pytest.raises(ValueError, match="different path handlers"):
        pm.copy("fake://a", str(tmp_path / "b"))


def test_register_twice_needs_allow_override(tmp_path):
    pm = PathManagerBase()
    first, second = FakeHandler(tmp_path / "one"), FakeHandler(tmp_path / "two")
    pm.register_handler(first)
    with pytest.raises(KeyError, match="fake://"):
        pm.register_handler(second)
    assert pm.get_local_path("fake://x") == str(tmp_path / "one" / "x")
    pm.register_handler(second, allow_override=True)
    assert pm.get_local_path("fake://x") == str(tmp_path / "two" / "x")
    with pytest.raises(TypeError, match="PathHandler"):
        pm.register_handler(object())


def test_longest_prefix_wins(tmp_path):
    class Bucket(FakeHandler):
        PREFIX = "fake://bucket/"

    pm = PathManagerBase()
    pm.register_handler(FakeHandler(tmp_path / "generic"))
    pm.register_handler(Bucket(tmp_path / "bucket"))
    assert pm.get_local_path("fake://bucket/x") == str(tmp_path / "bucket" / "x")
    assert pm.get_local_path("fake://other/x") == str(tmp_path / "generic" / "other" / "x")


def test_default_manager_serves_urls_and_detectron2_prefix(monkeypatch):
    assert isinstance(PathManager._get_path_handler("https://h/x.pkl"), HTTPURLHandler)
    assert isinstance(PathManager._get_path_handler("http://h/x.pkl"), HTTPURLHandler)
    assert isinstance(PathManager._get_path_handler("detectron2://a/b.pkl"), Detectron2Handler)
    assert Detectron2Handler.S3_DETECTRON2_PREFIX == "https://dl.fbaipublicfiles.com/detectron2/"

    # detectron2:// becomes detectron2's public URL; the download itself is the catalog's.
    from workbench.checkpoint import catalog

    fetched = []
    monkeypatch.setattr(catalog, "get_local_path",
                        lambda path, **kw: fetched.append(path) or "/cache/b.pkl")
    assert PathManager.get_local_path("detectron2://a/b.pkl") == "/cache/b.pkl"
    assert fetched == ["https://dl.fbaipublicfiles.com/detectron2/a/b.pkl"]


def test_module_exports():
    assert {"PathManager", "PathHandler"} <= set(file_io.__all__)


class _FakeResponse(io.BytesIO):
    """What ``urllib.request.urlopen`` returns, for the catalog's download loop."""

    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _fake_urlopen(monkeypatch, data=None):
    """Replace the network: ``data`` is served for every URL, or (None) every fetch fails."""
    from workbench.checkpoint import catalog

    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        if data is None:
            raise urllib.error.URLError("offline (fake)")
        return _FakeResponse(data)

    monkeypatch.setattr(catalog.urllib.request, "urlopen", urlopen)
    return calls


URL = "https://example.invalid/models/weights.bin"


def _cached(tmp_path, content):
    from workbench.checkpoint import catalog

    dst = catalog.cache_path_for_url(URL, str(tmp_path))
    os.makedirs(os.path.dirname(dst))
    with open(dst, "wb") as f:
        f.write(content)
    return dst


def test_forced_refresh_while_offline_keeps_the_cached_copy(tmp_path, monkeypatch):
    from workbench.checkpoint.catalog import DownloadError

    dst = _cached(tmp_path, b"good cached bytes")
    calls = _fake_urlopen(monkeypatch, data=None)
    with pytest.raises(DownloadError, match="offline"):
        PathManager.get_local_path(URL, force=True, cache_dir=str(tmp_path), progress=False)
    assert calls == [URL]
    with open(dst, "rb") as f:
        assert f.read() == b"good cached bytes"
    assert os.listdir(os.path.dirname(dst)) == ["weights.bin"]  # no temporary file left behind
    # Without force the cached copy is used as it is, network or not.
    assert PathManager.get_local_path(URL, cache_dir=str(tmp_path)) == dst
    assert calls == [URL]


def test_forced_refresh_replaces_the_cached_copy(tmp_path, monkeypatch):
    dst = _cached(tmp_path, b"old")
    calls = _fake_urlopen(monkeypatch, data=b"new bytes")
    assert PathManager.get_local_path(URL, cache_dir=str(tmp_path), progress=False) == dst
    assert calls == []  # cached: nothing fetched
    got = PathManager.get_local_path(URL, force=True, cache_dir=str(tmp_path), progress=False)
    assert got == dst and calls == [URL]
    with open(dst, "rb") as f:
        assert f.read() == b"new bytes"
    assert os.listdir(os.path.dirname(dst)) == ["weights.bin"]
