"""A plugin (``SURROGATE_SEARCH_PLUGINS``) that makes a learned surrogate's post-tuning diverge
inside Ray's worker processes, where a test's monkeypatch does not reach: with ``lr >= DIVERGING_LR``
the model loss turns NaN at the model update after the first evaluation. Real settings within the
validated ranges rarely give NaN on the tiny tabular task (Adam's steps and gradient clipping keep
the weights finite), so the test fixes where it happens."""

from __future__ import annotations

from surrogate_search.surrogates.learned import LearnedSurrogateLoss

DIVERGING_LR = 0.1

_model_loss = LearnedSurrogateLoss.model_loss


def _diverging_model_loss(self, outputs, batch):
    loss, stats = _model_loss(self, outputs, batch)
    self._updates = getattr(self, "_updates", 0) + 1
    if self.config.lr >= DIVERGING_LR and self._updates > self.config.eval_every:
        loss = loss * float("nan")
    return loss, stats


LearnedSurrogateLoss.model_loss = _diverging_model_loss
