"""Tests for helpers.settings: what notebooks print names paths relative to the repository."""
from helpers.settings import REPO_ROOT, get_settings, repo_relative


def test_printed_paths_are_relative_to_the_repository(tmp_path):
    assert repo_relative(REPO_ROOT / "artifacts" / "x") == "artifacts/x"
    assert repo_relative(tmp_path) == str(tmp_path)  # outside the repository: as it is
    text = get_settings("tiny").describe()
    assert str(REPO_ROOT) not in text and "model=artifacts/models/" in text
