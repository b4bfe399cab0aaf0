"""Where the reference fixtures are: ``$WORKBENCH_FIXTURES``, else ``<repo>/../shared/fixtures``.

Importable from every test (``from fixture_paths import FIXTURES``): pytest puts ``tests/`` on
``sys.path`` because ``tests/conftest.py`` lives there. The lookup itself is
:func:`workbench.utils.fixtures.fixtures_dir`, which the notebooks use too.
"""

from pathlib import Path

from workbench.utils.fixtures import fixtures_dir

REPO = Path(__file__).resolve().parents[1]
FIXTURES = fixtures_dir()
