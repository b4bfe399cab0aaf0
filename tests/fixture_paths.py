"""Where the reference fixtures are: ``$WORKBENCH_FIXTURES``, else ``<repo>/../shared/fixtures``.

Importable from every test (``from fixture_paths import FIXTURES``): pytest puts ``tests/`` on
``sys.path`` because ``tests/conftest.py`` lives there.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("WORKBENCH_FIXTURES", REPO.parent / "shared" / "fixtures")).resolve()
