"""Time of one CTC forced alignment (``aligned_targets``) on the text task's shapes.

Random per-frame probabilities (B x 24 frames x 37 classes) and random labels of 0 to 12
characters; the figure is the median over ``--repeats`` calls after a few untimed warm-up calls,
beside one CTC loss forward + backward on the same batch for scale.

    python bench/ctc_align.py
    python bench/ctc_align.py --batch 256 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from surrogate_search.tasks.ctc_align import aligned_targets
from surrogate_search.tasks.synthetic_text import BLANK, FRAMES, NUM_CLASSES, encode_labels
from surrogate_search.tasks.text_render import CHARSET, MAX_LABEL_LENGTH


def median_ms(call, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = what one Ray Train CPU worker gets)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    labels = ["".join(rng.choice(list(CHARSET), size=int(rng.integers(0, MAX_LABEL_LENGTH + 1))))
              for _ in range(args.batch)]
    targets, lengths = encode_labels(labels)
    logits = torch.randn(args.batch, FRAMES, NUM_CLASSES, generator=torch.Generator().manual_seed(0), requires_grad=True)
    predictions = logits.softmax(-1)

    def align() -> None:
        aligned_targets(predictions, targets, lengths, NUM_CLASSES)

    def ctc_loss() -> None:
        log_probs = logits.log_softmax(-1).transpose(0, 1)
        frames = torch.full((args.batch,), FRAMES, dtype=torch.long)
        F.ctc_loss(log_probs, targets, frames, lengths, blank=BLANK, zero_infinity=True).backward()

    print(f"batch {args.batch} x {FRAMES} frames x {NUM_CLASSES} classes, labels 0-{MAX_LABEL_LENGTH} characters, "
          f"torch threads {args.threads}, median of {args.repeats} calls")
    print(f"aligned_targets              {median_ms(align, args.repeats):7.2f} ms")
    print(f"ctc_loss forward + backward  {median_ms(ctc_loss, args.repeats):7.2f} ms")


if __name__ == "__main__":
    main()
