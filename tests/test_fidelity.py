"""The fidelity probe's held-out pairs, and the ceiling its Spearman figures are read against."""

from __future__ import annotations

import math

import pytest
import torch

from surrogate_search.fidelity import FidelityProbe, tied_ceiling
from surrogate_search.sampling import SamplingConfig
from surrogate_search.surrogates import spearman


@pytest.mark.parametrize("share", [0.2, 0.5])
def test_the_ceiling_of_a_two_valued_metric_is_the_correlation_of_an_indicator_with_its_ranks(share: float) -> None:
    # errors 1 and 2 only: a continuous estimate can order the 2s above the 1s and no better;
    # the rank correlation of a share-p indicator with a uniform rank is sqrt(3 p (1 - p)).
    errors = torch.tensor([1.0] * round(1000 * (1 - share)) + [2.0] * round(1000 * share))
    assert tied_ceiling(errors) == pytest.approx(math.sqrt(3 * share * (1 - share)), abs=0.01)


def test_without_ties_the_ceiling_is_one_and_no_estimate_beats_it() -> None:
    assert tied_ceiling(torch.arange(40.0)) == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    errors = torch.randint(1, 5, (500,), generator=generator).float()
    noisy = errors + 0.3 * torch.randn(500, generator=generator)
    assert spearman(noisy, errors) < tied_ceiling(errors) < 1.0
    assert math.isnan(tied_ceiling(torch.ones(10)))  # no order to find


def test_the_probe_scores_the_same_held_out_pairs_at_every_call(text_checkpoint) -> None:
    task = text_checkpoint.build_task()
    model = text_checkpoint.build_model(task).eval()
    probe = FidelityProbe(task, task.load_splits().val, SamplingConfig(), 8, n_items=12)
    first, second = probe.pairs(model), probe.pairs(model)
    assert sorted(first) == ["global", "local", "local_noisy"]
    for kind in first:
        torch.testing.assert_close(first[kind].predictions, second[kind].predictions)
        assert first[kind].errors.tolist() == second[kind].errors.tolist()
    assert (first["local_noisy"].errors >= first["local"].errors).float().mean() > 0.5  # noise adds errors
