from __future__ import annotations

import math

import pytest
import torch

from surrogate_search.surrogates.anyloss import amplify, anyloss, soft_confusion


def test_soft_confusion_matches_a_hand_computed_matrix() -> None:
    p = torch.tensor([0.9, 0.2, 0.7, 0.4, 0.55])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    a = [1 / (1 + math.exp(-73 * (v - 0.5))) for v in p.tolist()]  # ~[1, 0, 1, 0, 0.975]
    tp = a[0] + a[3] + a[4]
    fp = a[1] + a[2]
    fn = 3 - tp
    tn = 5 - 3 - sum(a) + tp
    got = soft_confusion(p, y, amplification=73.0)
    for value, expected in zip(got, (tp, fp, fn, tn)):
        assert float(value) == pytest.approx(expected, rel=1e-5)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert float(anyloss(p, y, "f1")) == pytest.approx(1 - f1, rel=1e-5)
    recall_pos, recall_neg = tp / (tp + fn), tn / (tn + fp)
    assert float(anyloss(p, y, "balanced_accuracy")) == pytest.approx(1 - (recall_pos + recall_neg) / 2, rel=1e-5)
    assert float(anyloss(p, y, "gmean")) == pytest.approx(1 - math.sqrt(recall_pos * recall_neg), rel=1e-4)
    assert float(anyloss(p, y, "accuracy")) == pytest.approx(1 - (tp + tn) / 5, rel=1e-5)


def test_amplification_sharpens_towards_hard_labels() -> None:
    a = amplify(torch.tensor([0.0, 0.45, 0.5, 0.55, 1.0]))
    assert float(a[0]) < 1e-15 and float(1 - a[-1]) < 1e-6 and float(a[2]) == 0.5
    assert float(a[1]) < 0.03 and float(a[3]) > 0.97


def test_anyloss_gradient_pushes_probabilities_the_right_way() -> None:
    p = torch.tensor([0.52, 0.48], requires_grad=True)
    anyloss(p, torch.tensor([1.0, 0.0])).backward()
    assert p.grad[0] < 0 < p.grad[1]  # raise the positive, lower the negative


def test_unknown_anyloss_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        anyloss(torch.zeros(2), torch.zeros(2), "auc")


def test_a_users_confusion_matrix_metric_gets_anyloss_and_weighted_bce(monkeypatch: pytest.MonkeyPatch) -> None:
    from surrogate_search.metrics import METRICS, ConfusionMatrixMetric
    from surrogate_search.surrogates import list_methods
    from surrogate_search.tasks.imbalanced_tabular import ImbalancedTabular

    class Precision(ConfusionMatrixMetric):
        name = "test_precision"

        def formula(self, tp, fp, fn, tn, eps=0.0):
            return tp / (tp + fp + eps)

    class PrecisionTask(ImbalancedTabular):
        name = "test_precision_task"
        metric_name = "test_precision"

    monkeypatch.setitem(METRICS._factories, "test_precision", Precision)  # registered for this test only
    task = PrecisionTask(dataset="breast_cancer")
    assert {"anyloss", "weighted_proxy"} <= set(list_methods(task))
    p, y = torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1.0, 0.0, 1.0])
    tp, fp, _, _ = soft_confusion(p, y)
    assert float(anyloss(p, y, Precision())) == pytest.approx(1 - float(tp / (tp + fp)), rel=1e-5)
    assert Precision().compute([1, 1, 0], [1, 0, 1]) == pytest.approx(0.5)


@pytest.mark.parametrize("value", [0, 9.5, 74, float("nan")])
def test_amplification_outside_the_papers_range_is_refused_with_the_value(value: float) -> None:
    from surrogate_search.config import PostTuneConfig

    with pytest.raises(ValueError, match=rf"anyloss.amplification must be in \[10, 73\] .*got {value!r}"):
        PostTuneConfig.from_dotted({"anyloss.amplification": value}).validate()


def test_amplification_is_a_setting_from_the_command_line_to_the_loss(capsys) -> None:
    from surrogate_search.cli import main
    from surrogate_search.config import PostTuneConfig
    from surrogate_search.surrogates import create_loss
    from surrogate_search.tasks import Split, get_task

    task = get_task("imbalanced_tabular", dataset="breast_cancer")
    loss = create_loss(task, PostTuneConfig.for_task(task, {"method": "anyloss", "anyloss.amplification": 10}))
    p, y = torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0])
    value, _ = loss.model_loss(torch.logit(p), Split({"targets": y}, [1, 0]))
    assert float(value) == pytest.approx(float(anyloss(p, y, "f1", amplification=10)), rel=1e-5)
    assert float(value) != pytest.approx(float(anyloss(p, y, "f1")), rel=1e-3)  # not the default L = 73
    # A bad value stops the command before any checkpoint is looked for.
    code = main(["posttune", "--task", "imbalanced_tabular", "--method", "anyloss", "--checkpoint", "no_such_folder",
                 "--set", "anyloss.amplification=100", "--no-track"])
    err = capsys.readouterr().err
    assert code == 2
    assert "anyloss.amplification must be in [10, 73]" in err and "got 100.0" in err
