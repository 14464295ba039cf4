from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogate_search.tasks import get_task, synthetic_text
from surrogate_search.tasks.synthetic_text import BLANK, encode_labels, greedy_ctc_decode
from surrogate_search.tasks.text_render import CHARSET, IMAGE_HEIGHT, IMAGE_WIDTH, font_files, render_split


def test_rendering_is_reproducible_and_varied() -> None:
    images, labels = render_split(seed=3, split="train", size=40)
    again, labels_again = render_split(seed=3, split="train", size=40)
    assert images.shape == (40, IMAGE_HEIGHT, IMAGE_WIDTH) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, again)
    assert labels == labels_again
    assert all(1 <= len(s) <= 12 and set(s) <= set(CHARSET) for s in labels)
    assert len(set(labels)) > 30
    assert images.std(axis=(1, 2)).min() > 1.0  # every image shows something
    assert len(font_files()) >= 8


def test_splits_are_cached_on_disk(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = get_task("synthetic_text", train_size=8, val_size=4, test_size=4)
    first = task.load_splits(tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3

    def fail(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(synthetic_text, "render_split", fail)
    second = task.load_splits(tmp_path)
    assert second.train.labels == first.train.labels
    assert torch.equal(second.test.tensors["images"], first.test.tensors["images"])


def test_without_a_cache_dir_splits_go_to_the_default_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a Ray worker or a comparison that passes no cache_dir relies on: one render per machine.
    monkeypatch.setenv("SURROGATE_SEARCH_CACHE", str(tmp_path / "default"))
    task = get_task("synthetic_text", train_size=8, val_size=4, test_size=4)
    task.load_splits()
    assert len(list((tmp_path / "default").glob("synthetic_text-*.npz"))) == 3
    assert not list((tmp_path / "default").glob("*.tmp.npz"))


def test_label_encoding_and_greedy_decoding_round_trip() -> None:
    labels = ["hello", "a", "2025", "zz"]
    targets, lengths = encode_labels(labels)
    assert lengths.tolist() == [5, 1, 4, 2]
    # Spread each label over 24 frames CTC-style: repeated frames merge, blanks separate doubles.
    frames = torch.full((len(labels), 24), BLANK)
    for row, (t, n) in enumerate(zip(targets, lengths)):
        for i in range(int(n)):
            frames[row, 3 * i: 3 * i + 2] = t[i]
    assert greedy_ctc_decode(frames) == labels


def test_unencodable_label_is_named() -> None:
    with pytest.raises(ValueError, match="label 'Hello!'"):
        encode_labels(["Hello!"])
