"""A small CRNN (Shi, Bai & Yao, 2015): conv features, a BiLSTM over columns, a per-frame classifier.

Sized for CPUs: a 24 x 96 image, 4x downsampling in width, one BiLSTM layer by default.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, kernel: tuple[int, int] = (3, 3), padding: tuple[int, int] = (1, 1)) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CRNN(nn.Module):
    """Maps a ``(B, 1, 24, W)`` grey image to ``(B, W/4, num_classes)`` per-frame logits.

    Class 0 is the CTC blank. A 96-pixel image gives 24 frames, enough for 12 characters even
    when every neighbour repeats (CTC needs ``2L - 1`` frames).
    """

    input_height = 24

    def __init__(self, num_classes: int, channels: int = 16, hidden: int = 96, lstm_layers: int = 1) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            _conv(1, c), nn.MaxPool2d(2),                          # 12 x W/2
            _conv(c, 2 * c), nn.MaxPool2d(2),                      # 6 x W/4
            _conv(2 * c, 4 * c), nn.MaxPool2d((2, 1)),             # 3 x W/4
            _conv(4 * c, 4 * c, kernel=(3, 1), padding=(0, 0)),    # 1 x W/4
        )
        self.rnn = nn.LSTM(4 * c, hidden, num_layers=lstm_layers, bidirectional=True, batch_first=True)
        self.classifier = nn.Linear(2 * hidden, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2] != self.input_height:
            raise ValueError(f"CRNN expects images {self.input_height} pixels high, got shape {tuple(images.shape)}")
        # channels_last is ~25% faster for these small convolutions on CPU.
        x = self.features(images.contiguous(memory_format=torch.channels_last))  # (B, C, 1, T)
        x = x.squeeze(2).transpose(1, 2)          # (B, T, C)
        x, _ = self.rnn(x)
        return self.classifier(x)                 # (B, T, classes)
