"""A parallel attention text recogniser: one output per character position, not per image column.

The CRNN's convolutions and BiLSTM read the image into per-column features; a learned query per
character position attends over those columns and a shared classifier names the character there.
Position ``i`` of the output is the label's ``i``-th character (class 0 past the label's end), so the
output lines up with the label one-to-one: the layout LS-ED post-tuned (Patel et al., ECCV 2020),
where a surrogate compares prediction and label position by position with no alignment step.
"""

from __future__ import annotations

import torch
from torch import nn

from surrogate_search.tasks.crnn import CRNN
from surrogate_search.tasks.text_render import MAX_LABEL_LENGTH


class ParallelAttentionRecognizer(nn.Module):
    """Maps a ``(B, 1, 24, W)`` grey image to ``(B, positions, num_classes)`` logits.

    Class 0 means "no character here" (padding past the label's end). ``channels``, ``hidden`` and
    ``lstm_layers`` size the CRNN encoder as in :class:`~surrogate_search.tasks.crnn.CRNN`;
    ``heads`` splits its ``2 * hidden`` features among attention heads (it must divide them).
    """

    def __init__(self, num_classes: int, channels: int = 16, hidden: int = 96, lstm_layers: int = 1,
                 positions: int = MAX_LABEL_LENGTH, heads: int = 4) -> None:
        super().__init__()
        width = 2 * hidden
        if width % heads:
            raise ValueError(f"heads ({heads}) must divide the encoder's 2 x hidden = {width} features")
        # The CRNN up to its BiLSTM is the encoder: reuse it whole (its input check, channels-last
        # convolutions) and drop the per-column classifier, which has nothing to do here.
        self.encoder = CRNN(num_classes, channels=channels, hidden=hidden, lstm_layers=lstm_layers)
        self.encoder.classifier = nn.Identity()
        self.queries = nn.Parameter(torch.randn(positions, width) * width ** -0.5)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, width))
        self.classifier = nn.Linear(width, num_classes)

    @property
    def positions(self) -> int:
        return self.queries.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        columns = self.encoder(images)                                      # (B, T, 2 * hidden)
        queries = self.queries.unsqueeze(0).expand(len(columns), -1, -1)   # (B, positions, 2 * hidden)
        attended, _ = self.attention(queries, columns, columns, need_weights=False)
        x = self.norm(queries + attended)
        return self.classifier(x + self.feed_forward(x))                   # (B, positions, classes)
