"""workbench.compat: the opt-in ``detectron2`` -> ``workbench`` import alias.

Each check runs in a fresh interpreter, so the alias never leaks into other tests.
"""

import os
import subprocess
import sys
import textwrap

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, extra_path: str = "") -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, _ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_alias_is_off_by_default():
    out = _run("""
        import workbench, workbench.compat, workbench.config, workbench.model_zoo
        try:
            import detectron2
        except ModuleNotFoundError:
            print("absent")
        print(workbench.compat.is_installed())
        """)
    assert out.split() == ["absent", "False"]


def test_install_gives_the_same_module_objects_and_uninstall_removes_them():
    out = _run("""
        import sys
        import workbench.compat as compat
        compat.install()
        compat.install()  # twice is harmless
        import detectron2
        import detectron2.modeling.backbone.fpn as d2_fpn
        from detectron2.modeling import GeneralizedRCNN
        from detectron2 import model_zoo
        import workbench, workbench.modeling, workbench.modeling.backbone.fpn as wb_fpn
        import workbench.model_zoo
        print(detectron2 is workbench, d2_fpn is wb_fpn,
              GeneralizedRCNN is workbench.modeling.GeneralizedRCNN,
              model_zoo is workbench.model_zoo)
        print(wb_fpn.__name__ == "workbench.modeling.backbone.fpn",
              wb_fpn.__spec__.name == "workbench.modeling.backbone.fpn")
        try:
            import detectron2.no_such_module
        except ModuleNotFoundError as e:
            print("missing", e.name)
        compat.uninstall()
        print(compat.is_installed(), [k for k in sys.modules if k.startswith("detectron2")])
        try:
            import detectron2
        except ModuleNotFoundError:
            print("gone")
        """)
    lines = out.splitlines()
    assert lines[0].split() == ["True"] * 4
    assert lines[1].split() == ["True", "True"]  # the real modules keep their own identity
    assert lines[2] == "missing detectron2.no_such_module"
    assert lines[3] == "False []" and lines[4] == "gone"


def test_install_refuses_when_another_detectron2_is_imported(tmp_path):
    fake = tmp_path / "detectron2"
    fake.mkdir()
    (fake / "__init__.py").write_text("REAL = True\n")
    out = _run("""
        import warnings
        import detectron2
        import workbench.compat as compat
        try:
            compat.install()
        except RuntimeError as e:
            print("refused:", "already imported" in str(e), compat.is_installed())
        """, extra_path=str(tmp_path))
    assert out.strip() == "refused: True False"


def test_installed_but_not_imported_detectron2_is_shadowed_with_a_warning(tmp_path):
    fake = tmp_path / "detectron2"
    fake.mkdir()
    (fake / "__init__.py").write_text("REAL = True\n")
    out = _run("""
        import warnings
        import workbench.compat as compat
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compat.enable_detectron2_alias()
        print(any("real detectron2 is installed" in str(w.message) for w in caught))
        import detectron2, workbench
        print(detectron2 is workbench)
        compat.uninstall()
        import detectron2
        print(getattr(detectron2, "REAL", False))
        """, extra_path=str(tmp_path))
    assert out.split() == ["True", "True", "True"]


@pytest.mark.parametrize("name", ["detectron2.config", "detectron2.modeling.backbone.vit"])
def test_alias_reaches_submodules(name):
    out = _run(f"""
        import importlib, workbench.compat as compat
        compat.install()
        alias = importlib.import_module({name!r})
        real = importlib.import_module({name.replace("detectron2", "workbench", 1)!r})
        print(alias is real)
        """)
    assert out.strip() == "True"
