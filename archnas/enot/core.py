"""The one ENOT search rule, shared by the `enot` algorithm's search stage and the Python API's
search optimizers (`archnas.enot.optimizers`): one core, two front ends.

Each search step (`SearchCore.sample`):

1. one architecture is drawn from the current distribution softmax(alpha) of every label: the
   argmax of log_softmax(alpha) + Gumbel noise (an exact sample), the noise drawn from a
   generator the caller seeds (the stage: from the seed and the global step, so a resumed search
   draws what an uninterrupted one drew);
2. the supernet runs only that architecture; its weights at every forward are the one-hot sample
   with the gradient of the tempered Gumbel-softmax (straight-through, GDAS's estimator), so the
   loss of the sampled network reaches the architecture logits;
3. its BatchNorm statistics are re-estimated on a few train batches (`tune_bn`: ENOT's BN tuning,
   10 batches by default), and the caller computes the loss on a val batch in eval mode (the
   tuned statistics), adds the soft cost term (`CostPenalty`, or the user's own term on
   `forward_latency`) and steps the architecture logits only.

Before validation and at the end, the architecture is the most probable one within every limit
(`SearchCore.best_arch`: `Limits.best_within` over log_softmax(alpha), an exact constrained
argmax; the plain argmax without limits), BN-tuned on more batches (50 by default).

Only labels that pick one candidate (no matrix labels, no input choice of several inputs) are
searched this way: a label's option order is then its candidates' order, which the cost tables
share.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from archnas.data.loader import Batch
from archnas.latency import Limits, SpaceCosts
from archnas.latency.table import row_to_arch
from archnas.space import SearchSpaceModel
from archnas.space.store import ArchStore, ArchWeights, ChoiceSpec, Weighting
from archnas.training.bn_recalibration import recalibrate_bn


def unsearchable_label(specs: Mapping[str, ChoiceSpec]) -> Optional[str]:
    """Why the ENOT rule cannot search these labels (one sentence naming the first culprit), or None."""
    for label, spec in specs.items():
        if spec.rows or spec.n_chosen != 1:
            what = "a matrix label (DARTS cells)" if spec.rows else "an input choice of several inputs"
            return (f"{label!r} is {what}; the ENOT search draws one candidate per label (search it with darts, "
                    "gdas or spos)")
    return None


class StepSample(Weighting):
    """The architecture of one search step: per label the drawn candidate, the same at every
    forward of the step (BN tuning, the loss); each forward recomputes the straight-through
    weights one_hot - p.detach() + p, p = softmax((log_softmax(alpha) + noise) / tau), so every
    forward has its own graph to the logits (gradient accumulation over several forwards)."""

    def __init__(self, noise: dict[str, Tensor], chosen: dict[str, int], tau: float):
        self.noise, self.chosen, self.tau = noise, chosen, tau

    def weights(self, store: ArchStore) -> dict[str, ArchWeights]:
        out = {}
        for label in store.specs:
            alpha = store.alpha(label)
            probs = F.softmax((F.log_softmax(alpha, dim=-1) + self.noise[label]) / self.tau, dim=-1)
            hard = torch.zeros_like(probs)
            hard[self.chosen[label]] = 1.0
            out[label] = ArchWeights(hard - probs.detach() + probs, chosen=[self.chosen[label]])
        return out


class SearchCore:
    """The search rule over one SearchSpaceModel (see the module docstring). `costs` and `limits`
    give the constrained argmax (no limits: the plain argmax); `tau` shapes only the gradient."""

    def __init__(self, model: SearchSpaceModel, costs: Optional[SpaceCosts] = None,
                 limits: Optional[Limits] = None, tau: float = 1.0):
        why = unsearchable_label(model.specs)
        if why is not None:
            raise ValueError(why)
        if limits and costs is None:
            raise ValueError("limits need the space's cost models (costs)")
        self.model, self.costs, self.limits, self.tau = model, costs, limits, float(tau)

    @property
    def store(self) -> ArchStore:
        return self.model.arch

    def probabilities(self) -> dict[str, Tensor]:
        """softmax(alpha) of every label: what the expected cost and the soft cost term read."""
        return {label: F.softmax(self.store.alpha(label), dim=-1) for label in self.store.specs}

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        """Draw the step's architecture from the current distribution (noise from `generator`, a
        CPU generator) and make the supernet run it; returns it as `{label: choice}`."""
        noise, chosen = {}, {}
        with torch.no_grad():
            for label in self.store.specs:
                alpha = self.store.alpha(label)
                draws = torch.empty(alpha.shape, dtype=torch.float64).exponential_(generator=generator)
                g = -draws.clamp_min(torch.finfo(torch.float64).tiny).log()
                noise[label] = g.to(alpha.device, alpha.dtype)
                chosen[label] = int((F.log_softmax(alpha, dim=-1) + noise[label]).argmax())
        self.store.use(StepSample(noise, chosen, self.tau))
        return self.choices(chosen)

    def choices(self, indices: Mapping[str, int]) -> dict[str, Any]:
        return row_to_arch(self.store.specs, [indices[label] for label in self.store.specs])

    def log_probs(self) -> dict[str, list[float]]:
        return {label: F.log_softmax(self.store.alpha(label).detach().double(), dim=-1).tolist()
                for label in self.store.specs}

    def best_arch(self) -> dict[str, Any]:
        """The most probable architecture within every limit (exact), else the argmax."""
        scores = self.log_probs()
        if self.limits:
            return self.limits.best_within(self.costs, scores)
        return row_to_arch(self.store.specs, [max(range(len(s)), key=s.__getitem__) for s in scores.values()])

    def use(self, arch: Mapping[str, Any]) -> None:
        """Run `arch` at every forward (validation, extraction)."""
        self.model.set_architecture(arch)

    def tune_bn(self, batches: Iterable[Batch], device: Optional[torch.device] = None) -> int:
        """BN tuning of the architecture the supernet runs now (`recalibrate_bn`)."""
        return recalibrate_bn(self.model, batches, device)

    def expected(self, name: str) -> float:
        """The expected cost of model `name` under the current distribution (what the logs report)."""
        with torch.no_grad():
            return float(self.costs.model(name).expected(self.probabilities()))
