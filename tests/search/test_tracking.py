"""The key of a search's MLflow parent run: stable across resumes, new for a new search."""

from __future__ import annotations

import shutil
from pathlib import Path

from surrogate_search.search.tracking import SEARCH_ID_FILE, search_key


def test_resume_finds_the_same_parent_and_a_new_search_in_a_recreated_folder_does_not(tmp_path: Path) -> None:
    folder = tmp_path / "text_edit_distance"
    folder.mkdir()
    first = search_key(folder)
    assert search_key(folder) == first  # what --resume sees
    assert (folder / SEARCH_ID_FILE).read_text().strip() == first and str(folder.resolve()) in first

    shutil.rmtree(folder)  # the user deletes the search and starts over with other settings
    folder.mkdir()
    assert search_key(folder) != first
