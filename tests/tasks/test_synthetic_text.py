from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogate_search.checkpoint import load_checkpoint
from surrogate_search.pretrain import pretrain
from surrogate_search.tasks import Split, get_task, synthetic_text
from surrogate_search.tasks.attention_decoder import ParallelAttentionRecognizer
from surrogate_search.tasks.synthetic_text import (
    BLANK,
    FRAMES,
    NUM_CLASSES,
    SyntheticText,
    encode_labels,
    greedy_ctc_decode,
    position_decode,
)
from surrogate_search.tasks.text_render import CHARSET, IMAGE_HEIGHT, IMAGE_WIDTH, MAX_LABEL_LENGTH, font_files, render_split


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
    assert len(list(tmp_path.glob("*.npz"))) == 4  # train, val, test and the tuning images

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
    assert len(list((tmp_path / "default").glob("synthetic_text-*.npz"))) == 4
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


# --- the attention decoder (model=attention): outputs aligned with the label's positions ---------

def attention_task(**options) -> SyntheticText:
    return get_task("synthetic_text", model="attention", train_size=48, val_size=16, test_size=16, **options)


def label_batch(labels: list[str]) -> Split:
    targets, lengths = encode_labels(labels)
    return Split({"targets": targets, "target_lengths": lengths}, labels)


def test_model_option_is_part_of_the_task_config() -> None:
    assert get_task("synthetic_text").options["model"] == "crnn"
    assert attention_task().config["options"]["model"] == "attention"
    with pytest.raises(ValueError, match="unknown model 'transformer'; known: \\['attention', 'crnn'\\]"):
        get_task("synthetic_text", model="transformer")


def test_attention_outputs_one_prediction_per_label_position() -> None:
    task = attention_task()
    assert task.surrogate_shape == (MAX_LABEL_LENGTH, NUM_CLASSES)
    assert get_task("synthetic_text").surrogate_shape == (FRAMES, NUM_CLASSES)
    model = task.build_model()
    assert isinstance(model, ParallelAttentionRecognizer)
    batch = next(task.load_splits().train.batches(5))
    outputs = task.forward(model, batch)
    assert outputs.shape == (5, MAX_LABEL_LENGTH, NUM_CLASSES)
    assert task.surrogate_targets(batch).shape == (5, *task.surrogate_shape)
    assert len(task.decode(task.predict(outputs))) == 5


def test_attention_targets_are_correct_predictions() -> None:
    # Position-aligned: the one-hot label IS a perfect prediction, at edit distance 0.
    task = attention_task()
    labels = ["hello", "a", "", "aabbccddeeff", "0z0"]
    targets = task.surrogate_targets(label_batch(labels))
    assert targets[0].argmax(-1).tolist() == [18, 15, 22, 22, 25] + [0] * 7
    assert task.decode(targets) == labels
    assert task.item_errors(targets, labels).tolist() == [0.0] * len(labels)


def test_position_decoding_stops_at_the_first_end_class() -> None:
    assert position_decode(torch.tensor([[11, 12, 0, 13, 0], [1, 2, 3, 4, 5], [0, 11, 11, 11, 11]])) == ["ab", "01234", ""]


def test_attention_proxy_loss_is_cross_entropy_per_position() -> None:
    task = attention_task()
    batch = label_batch(["ab", "hello"])
    perfect = 30.0 * task.surrogate_targets(batch)
    assert float(task.proxy_loss(perfect, batch)) < 1e-6
    uniform = torch.zeros_like(perfect)
    assert float(task.proxy_loss(uniform, batch)) == pytest.approx(np.log(NUM_CLASSES), rel=1e-6)
    # One wrong position out of 2 x 12: the loss is that position's cross-entropy over 24.
    wrong = perfect.clone()
    wrong[0, 1] = 30.0 * torch.nn.functional.one_hot(torch.tensor(5), NUM_CLASSES)
    assert float(task.proxy_loss(wrong, batch)) == pytest.approx(30.0 / 24, rel=1e-4)


def test_attention_global_pairs_are_seeded_position_layouts_spanning_errors() -> None:
    task = attention_task()
    predictions, targets, labels = task.random_pairs(200, 1, torch.Generator().manual_seed(0))
    again, _, labels_again = task.random_pairs(200, 1, torch.Generator().manual_seed(0))
    assert predictions.shape == targets.shape == (200, MAX_LABEL_LENGTH, NUM_CLASSES)
    assert torch.equal(predictions, again) and labels == labels_again
    assert torch.allclose(predictions.sum(-1), torch.ones(200, MAX_LABEL_LENGTH))
    assert task.decode(targets) == labels
    errors = task.item_errors(predictions, labels)
    assert (errors == 0).float().mean() > 0.1 and errors.max() >= 3


def test_attention_perturbation_keeps_the_layout() -> None:
    task = attention_task()
    outputs = torch.randn(4, MAX_LABEL_LENGTH, NUM_CLASSES)
    noisy = task.perturb(outputs, torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.Generator().manual_seed(0))
    assert noisy.shape == outputs.shape
    assert torch.allclose(noisy[:2], outputs[:2].softmax(-1))
    assert not torch.allclose(noisy[2:], outputs[2:].softmax(-1))


@pytest.fixture
def one_thread():
    # Tensors this small gain nothing from a second thread, and on a busy 2-core machine waiting
    # for it made this test 7x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_attention_model_overfits_sixteen_images(one_thread) -> None:
    task = attention_task()
    batch = task.load_splits().train.subset(range(16))
    torch.manual_seed(0)
    model = task.build_model(channels=8, hidden=32, heads=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(120):
        loss = task.proxy_loss(task.forward(model, batch), batch)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 3.0  # about log(37) at the start
    assert loss.item() < 0.05
    model.eval()
    with torch.no_grad():
        assert task.decode(task.predict(task.forward(model, batch))) == batch.labels


def test_pretrain_with_the_attention_model_saves_a_checkpoint_that_reloads(tmp_path, tiny_text_options) -> None:
    task = get_task("synthetic_text", model="attention", **tiny_text_options)
    result = pretrain(task, tmp_path / "base", max_epochs=1, patience=1)
    checkpoint = load_checkpoint(tmp_path / "base", expected_task="synthetic_text")
    assert checkpoint.task_options["model"] == "attention"
    assert checkpoint.model_options == {"channels": 16, "hidden": 96, "lstm_layers": 1, "heads": 4}
    reloaded = checkpoint.build_task()
    model = checkpoint.build_model(reloaded)
    assert isinstance(model, ParallelAttentionRecognizer)
    again = reloaded.evaluate(model, reloaded.load_splits().test)
    assert again["edit_distance"] == pytest.approx(result.test["edit_distance"])
