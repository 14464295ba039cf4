"""How well a learned surrogate tracks the true metric on pairs it was not trained on."""

from __future__ import annotations

import torch
from torch import nn

from surrogate_search.sampling import GlobalSampler, LocalSampler, Pairs, SamplingConfig
from surrogate_search.surrogates import PostTuneLoss, spearman
from surrogate_search.tasks import Split, Task


@torch.no_grad()
def pair_fidelity(loss: PostTuneLoss, pairs: Pairs, prefix: str) -> dict[str, float]:
    """Spearman correlation and mean absolute error of ``e_hat`` against ``e``, on all pairs and on
    the pairs with errors (where a converged model's pairs are nearly all right, a surrogate can
    look accurate on all pairs while knowing nothing about the errors that remain)."""
    estimates = loss.score(pairs.predictions, pairs.targets).float().cpu()
    errors = pairs.errors.float().cpu()
    wrong = errors > 0
    return {
        f"{prefix}_spearman": spearman(estimates, errors),
        f"{prefix}_mae": float((estimates - errors).abs().mean()),
        f"{prefix}_errors_spearman": spearman(estimates[wrong], errors[wrong]) if int(wrong.sum()) > 2 else float("nan"),
        f"{prefix}_error_fraction": float(wrong.float().mean()),
    }


class FidelityProbe:
    """Fixed held-out pairs: global ones drawn once, local ones from the validation split with the
    same indices and noise at every call (the model changes, the draw does not)."""

    def __init__(self, task: Task, val: Split, config: SamplingConfig, set_size: int, n_items: int = 256,
                 seed: int = 12345, device: torch.device | str = "cpu") -> None:
        self.task, self.val, self.config, self.set_size = task, val, config, set_size
        self.n_items, self.seed, self.device = n_items, seed, device
        self.global_pairs = GlobalSampler(task, val, config, set_size, torch.Generator().manual_seed(seed), device).sample(n_items, nn.Identity())

    def __call__(self, loss: PostTuneLoss, model: nn.Module) -> dict[str, float]:
        results: dict[str, float] = {}
        for name, pairs in self.pairs(model).items():
            results.update(pair_fidelity(loss, pairs, f"fidelity/{name}"))
        return results

    def pairs(self, model: nn.Module) -> dict[str, Pairs]:
        """The held-out pairs by kind: ``global``, ``local`` (the model's validation predictions as
        they are) and ``local_noisy`` (perturbed as ``sampling.noise`` says)."""
        pairs = {"global": self.global_pairs}
        for name, noise in (("local", 0.0), ("local_noisy", self.config.noise)):
            cfg = SamplingConfig(strategy="local", noise=noise, target=self.config.target)
            sampler = LocalSampler(self.task, self.val, cfg, self.set_size, torch.Generator().manual_seed(self.seed + 1), self.device)
            pairs[name] = sampler.sample(self.n_items, model)
        return pairs


def tied_ceiling(errors: torch.Tensor, draws: int = 20) -> float:
    """The Spearman correlation a perfect surrogate with continuous outputs reaches against
    ``errors``: the errors themselves with their ties broken at random (mean over ``draws``). Edit
    distances are small integers, so among pairs with errors most are tied (1, 2, ...), and this
    ceiling can sit well below 1."""
    if len(errors) < 3 or errors.std() == 0:
        return float("nan")
    generator = torch.Generator().manual_seed(0)
    errors = errors.double()
    jitter = 0.5 * errors.unique().diff().min()  # below the smallest gap: it reorders ties only
    return sum(spearman(errors + jitter * torch.rand(len(errors), generator=generator, dtype=torch.float64), errors)
               for _ in range(draws)) / draws
