"""workbench.utils.fixtures: the one lookup of the reference fixtures (tests and notebooks)."""

import pytest

from fixture_paths import FIXTURES, REPO
from workbench.utils import fixtures


def test_default_is_next_to_the_repo_whatever_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(fixtures.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert fixtures.fixtures_dir() == (REPO.parent / "shared" / "fixtures").resolve()


def test_environment_variable_wins_and_the_tests_use_the_same_lookup(monkeypatch, tmp_path):
    assert FIXTURES == fixtures.fixtures_dir()  # fixture_paths.FIXTURES, under the same environment
    (tmp_path / "some_fixture").mkdir()
    monkeypatch.setenv(fixtures.ENV_VAR, str(tmp_path))
    assert fixtures.fixtures_dir() == tmp_path.resolve()
    assert fixtures.fixture_folder("some_fixture") == tmp_path.resolve() / "some_fixture"


def test_a_missing_fixture_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv(fixtures.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"'nope'.*WORKBENCH_FIXTURES"):
        fixtures.fixture_folder("nope")
