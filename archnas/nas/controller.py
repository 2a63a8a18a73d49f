"""ENAS's controller (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing",
ICML 2018) as an architecture optimizer, registered as `enas` (the `enas` algorithm's).

The controller is a policy over the space's genome (`Space.genome`: one decision per gene, an
option index; a module space's labels, or per DARTS cell node its kept inputs and their ops), so
it drives whatever the Space protocol can `use` as a single path. Two policies
(`nas.search.enas.controller`):

- `independent` (default): one vector of logits per gene, starting at zero (uniform: the first
  steps sample as SPOS does);
- `lstm`: ENAS's controller. An LSTM cell of `lstm_size` units (64, as the ENAS code builds it,
  one layer) reads a learned start embedding, then at each gene the embedding of the previous
  decision; a per-gene linear head (no bias) turns its hidden state into the gene's logits. Every
  parameter starts uniform in [-0.1, 0.1], as in the ENAS code, drawn from a generator of the
  seed (not the global RNG).

Either way the logits are shaped as the ENAS code shapes them: divided by `temperature` (null:
not), then `tanh_constant * tanh(.)` (null: not), which bounds how sure the policy can get and so
keeps it exploring. Defaults are the ENAS code's macro search and NNI's: tanh constant 1.5, no
temperature (its micro search uses 1.10, and 1.10 / 2.5 on the op logits).

Each training step (`step`, before the weight step, one path per step as ENAS trains its
shared weights):
1. REINFORCE: draw a path from the policy, run it on one search val batch (no gradient, the
   supernet in the mode the trainer left it: batch statistics, as the ENAS code scores its
   sampled children), reward = its val top-1 + `entropy_weight` x the policy's entropy along the
   path (ENAS's entropy bonus, 1e-4); the baseline is a moving average, baseline <- decay *
   baseline + (1 - decay) * reward (decay 0.999), updated before it is used as ENAS and NNI do,
   starting at the first reward (ENAS starts it at 0, which at 0.999 takes thousands of steps to
   reach the reward's scale and leaves every early advantage positive); the controller takes one
   Adam step on -(reward - baseline) * log p(path). Adam as in the ENAS code: beta1 0, beta2
   0.999, eps 1e-3; `lr` 3.5e-4 by default (the ENAS paper; its code's scripts use 1e-3 for the
   macro and 3.5e-3 for the micro search).
2. The path the weight step trains: a second draw from the updated policy, set with `space.use`.
Every draw comes from a generator seeded by (seed, global step, draw), so the paths are a pure
function of the seed, the step and the controller's parameters: a resumed run and every DDP rank
draw the same ones (the val top-1 is averaged over the ranks, so every rank takes the same step).
Nothing else random is held: the checkpoint entries `controller` (its parameters),
`controller_optimizer` (Adam's state) and `enas` (baseline, the epoch's sums) are all of it.

The final architecture is the policy's greedy decode (`final_arch`): each decision its most
probable option given the previous ones; for independent logits this is exactly the most probable
architecture, for the LSTM the usual approximation of it. It is also what every validation of the
search scores (`before_validation`), so `val_top1` in search/metrics.jsonl is that of the
architecture the search would end with then. Each epoch records `enas_reward` (the mean reward of
its steps), `enas_val_top1` (their mean val top-1), `enas_entropy` (the mean entropy of the policy
along the sampled paths), `enas_baseline` and `enas_arch` (the greedy architecture).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnas.config import config_hash
from archnas.data.loader import Batch
from archnas.distributed import all_reduce_mean
from archnas.errors import ConfigError
from archnas.nas.arch_optimizer import ArchOptimizer, RunningMean, register_arch_optimizer
from archnas.nas.finalizers import NONE_OP
from archnas.nas.spaces import CellSpace, Genome, Space, space_of
from archnas.stats import dataset_info
from archnas.training.checkpoint import Stateful
from archnas.training.losses import split_outputs
from archnas.utils.seeding import derive_seed

CONTROLLERS = ("independent", "lstm")


@dataclass
class EnasConf:
    """`nas.search.enas`: the controller and its REINFORCE step (archnas/nas/controller.py)."""

    controller: str = "independent"  # independent (logits per gene) | lstm (ENAS's LSTM controller)
    lr: float = 3.5e-4  # the controller's Adam (beta1 0, eps 1e-3, as the ENAS code); the paper's lr
    baseline_decay: float = 0.999  # moving-average baseline of the reward, in [0, 1)
    entropy_weight: float = 1.0e-4  # the policy's entropy along the path, added to the reward
    lstm_size: int = 64  # lstm: hidden units (the ENAS code's 64)
    tanh_constant: Optional[float] = 1.5  # logits -> c * tanh(logits); null: off (ENAS macro search, NNI: 1.5)
    temperature: Optional[float] = None  # logits / temperature before the tanh; null: off (ENAS's default)


def check_enas(conf: EnasConf, key: str = "nas.search.enas") -> None:
    """The settings a controller cannot run with, named by their key."""
    if conf.controller not in CONTROLLERS:
        raise ConfigError(f"{key}.controller: {conf.controller!r}; expected one of {', '.join(CONTROLLERS)}")
    if not conf.lr > 0:
        raise ConfigError(f"{key}.lr: {conf.lr!r}; expected a number above 0")
    if not 0 <= conf.baseline_decay < 1:
        raise ConfigError(f"{key}.baseline_decay: {conf.baseline_decay!r}; expected a number in [0, 1)")
    if not conf.entropy_weight >= 0:
        raise ConfigError(f"{key}.entropy_weight: {conf.entropy_weight!r}; expected a number of at least 0")
    if conf.lstm_size < 1:
        raise ConfigError(f"{key}.lstm_size: {conf.lstm_size!r}; expected at least 1")
    for name in ("tanh_constant", "temperature"):
        value = getattr(conf, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{key}.{name}: {value!r}; expected a number above 0, or null (off)")


def single_path_refusal(space: Space) -> Optional[str]:
    """Why the controller cannot run one path of `space` at a time, or None: a path of DARTS cells
    runs `none` on the edges its nodes drop, so their primitives must hold it."""
    if isinstance(space, CellSpace) and NONE_OP not in space.conf.primitives:
        return (f"a sampled path of DARTS cells runs {NONE_OP!r} on the edges its nodes drop, and "
                f"{space.key}.primitives {list(space.conf.primitives)} has no {NONE_OP!r}; add it")
    return None


class Policy(nn.Module):
    """A distribution over genomes, decided gene by gene: `logits(row)` yields each gene's logits
    after the decisions so far are in `row` (the caller appends each decision before the next)."""

    def __init__(self, counts: Sequence[int]):
        super().__init__()
        self.counts = tuple(counts)

    def logits(self, row: list[int]) -> Iterator[Tensor]:
        raise NotImplementedError


class IndependentLogits(Policy):
    """One logit vector per gene; decisions do not depend on each other."""

    def __init__(self, counts: Sequence[int]):
        super().__init__(counts)
        self.gene_logits = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in self.counts])

    def logits(self, row: list[int]) -> Iterator[Tensor]:
        yield from self.gene_logits


class LstmPolicy(Policy):
    """ENAS's controller: an LSTM over the decisions, each gene's logits a linear read of its state."""

    def __init__(self, counts: Sequence[int], size: int, generator: torch.Generator):
        super().__init__(counts)
        self.start = nn.Parameter(torch.empty(1, size))
        self.lstm = nn.LSTMCell(size, size)
        self.embeddings = nn.ModuleList([nn.Embedding(n, size) for n in self.counts])
        self.heads = nn.ModuleList([nn.Linear(size, n, bias=False) for n in self.counts])
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-0.1, 0.1, generator=generator)

    def logits(self, row: list[int]) -> Iterator[Tensor]:
        x, state = self.start, None
        for i, head in enumerate(self.heads):
            state = self.lstm(x, state)
            yield head(state[0])[0]
            x = self.embeddings[i](torch.tensor([row[i]]))


class Reinforce:
    """The policy, its Adam and the moving-average baseline: the REINFORCE learner apart from any
    trainer or space (rows of option indices in, updates out)."""

    def __init__(self, conf: EnasConf, counts: Sequence[int], seed: int):
        self.conf = conf
        if conf.controller == "lstm":
            init = torch.Generator().manual_seed(derive_seed(seed, "enas_controller"))
            self.policy: Policy = LstmPolicy(counts, conf.lstm_size, init)
        else:
            self.policy = IndependentLogits(counts)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=conf.lr, betas=(0.0, 0.999), eps=1e-3)
        self.baseline: Optional[float] = None

    def shaped(self, logits: Tensor) -> Tensor:
        if self.conf.temperature is not None:
            logits = logits / self.conf.temperature
        if self.conf.tanh_constant is not None:
            logits = self.conf.tanh_constant * torch.tanh(logits)
        return logits

    def decide(self, pick: Callable[[Tensor], int]) -> tuple[list[int], Tensor, Tensor]:
        """A genome row, decided gene by gene with `pick(probs)`, with its log-probability (with
        the gradient to the policy) and the policy's entropy along it (a constant)."""
        row: list[int] = []
        log_p, entropy = torch.zeros(()), torch.zeros(())
        for logits in self.policy.logits(row):
            log_probs = F.log_softmax(self.shaped(logits), dim=-1)
            probs = log_probs.detach().exp()
            row.append(pick(probs))
            log_p = log_p + log_probs[row[-1]]
            entropy = entropy - (probs * log_probs.detach()).sum()
        return row, log_p, entropy

    def sample(self, generator: torch.Generator) -> tuple[list[int], Tensor, Tensor]:
        return self.decide(lambda probs: int(torch.multinomial(probs, 1, generator=generator)))

    def greedy(self) -> list[int]:
        """Each decision the most probable option given the ones before."""
        return self.greedy_with_probs()[0]

    def greedy_with_probs(self) -> tuple[list[int], list[list[float]]]:
        """The greedy row and each decision's distribution along it (for independent logits, the
        policy itself): what the heatmaps of the plot stage draw, as they draw softmaxed alphas."""
        seen: list[list[float]] = []

        def pick(probs: Tensor) -> int:
            seen.append([round(float(p), 6) for p in probs])
            return int(probs.argmax())

        with torch.no_grad():
            return self.decide(pick)[0], seen

    def update(self, log_p: Tensor, entropy: Tensor, accuracy: float) -> float:
        """One REINFORCE step for a sampled row of log-probability `log_p` that scored `accuracy`;
        returns its reward (with the entropy bonus)."""
        reward = accuracy + self.conf.entropy_weight * float(entropy)
        decay = self.conf.baseline_decay
        self.baseline = reward if self.baseline is None else decay * self.baseline + (1 - decay) * reward
        self.optimizer.zero_grad(set_to_none=True)
        (-(reward - self.baseline) * log_p).backward()
        self.optimizer.step()
        return reward


class Controller(ArchOptimizer):
    """The `enas` architecture optimizer (the module docstring)."""

    trains_alphas = False  # the controller's parameters are its own, not the store's alphas
    needs_val = True

    def __init__(self, strategy: Any):
        super().__init__(strategy)
        self.conf: EnasConf = strategy.conf.nas.search.enas

    def check(self) -> None:
        check_enas(self.conf)
        space = space_of(self.strategy.conf.nas.search)
        refusal = single_path_refusal(space)
        if refusal is not None:
            raise ConfigError(f"{space.key}: the enas architecture optimizer cannot search {space.title}: {refusal}")

    def weighting(self) -> None:
        return None  # each step fixes a whole path (`space.use`)

    def setup(self, trainer: Any) -> None:
        super().setup(trainer)
        conf = self.strategy.conf
        self.space: Space = space_of(conf.nas.search)
        self.genome: Genome = self.space.genome(dataset_info(conf.dataset, conf.common.cache_dir))
        self.model, self.seed = trainer.base_model, conf.common.seed
        self.learner = Reinforce(self.conf, self.genome.counts, self.seed)
        self.rewards, self.accuracies, self.entropies = RunningMean(), RunningMean(), RunningMean()
        self.space.use(self.model, self.final_arch())

    def sample(self, draw: int) -> tuple[list[int], Tensor, Tensor]:
        """A draw of the policy from a generator of (seed, global step, draw)."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, "enas", self.trainer.global_step, draw))
        return self.learner.sample(g)

    def final_arch(self) -> Any:
        """The greedy decode of the policy (the module docstring)."""
        return self.genome.decode(self.learner.greedy())

    # -- the step ------------------------------------------------------------------------------

    def step(self, train: Batch, next_val: Callable[[], Batch]) -> None:
        t = self.trainer
        if self.strategy.takes_arch_step(t.epoch):
            row, log_p, entropy = self.sample(0)
            self.space.use(self.model, self.genome.decode(row))
            x, y = next_val()
            with torch.no_grad(), t.precision.autocast():
                logits = split_outputs(self.model(t.precision.prepare_input(x)))[0]
            correct = (logits.argmax(-1) == y).float().mean().reshape(1)
            all_reduce_mean([correct])
            accuracy = float(correct)  # the step's one read from the device
            self.rewards.add(self.learner.update(log_p, entropy, accuracy))
            self.accuracies.add(accuracy)
            self.entropies.add(float(entropy))
        with torch.no_grad():
            row, _, _ = self.sample(1)
        self.space.use(self.model, self.genome.decode(row))

    def before_validation(self) -> None:
        self.space.use(self.model, self.final_arch())

    # -- records and checkpoints ---------------------------------------------------------------

    def epoch_metrics(self) -> dict[str, Any]:
        arch = self.final_arch()
        record: dict[str, Any] = {}
        for name, mean in (("enas_reward", self.rewards), ("enas_val_top1", self.accuracies),
                           ("enas_entropy", self.entropies)):
            value = mean.pop()
            if value is not None:
                record[name] = value
        baseline = self.learner.baseline
        _, distributions = self.learner.greedy_with_probs()
        record.update(enas_baseline=baseline, enas_arch=self.space.record(arch), alphas={
            spec.label: {"ops": list(spec.candidates), "softmax": {spec.label: probs}}
            for spec, probs in zip(self.genome.specs.values(), distributions)})
        if "enas_reward" in record:
            self.trainer.log.info(
                f"enas epoch {self.trainer.epoch + 1}: mean reward {record['enas_reward']:.4f} (val top-1 of the "
                f"sampled paths {record['enas_val_top1']:.4f}), baseline {baseline:.4f}, policy entropy "
                f"{record['enas_entropy']:.4f}; most probable: {self.space.describe(arch)}")
        return record

    def states(self) -> dict[str, Stateful]:
        return {"controller": self.learner.policy, "controller_optimizer": self.learner.optimizer, "enas": self}

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.learner.baseline, "rewards": self.rewards.state_dict(),
                "accuracies": self.accuracies.state_dict(), "entropies": self.entropies.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.baseline = state["baseline"]
        self.rewards.load_state_dict(state["rewards"])
        self.accuracies.load_state_dict(state["accuracies"])
        self.entropies.load_state_dict(state["entropies"])

    def settings(self) -> dict[str, str]:
        return {"enas_lr": config_hash({"lr": self.conf.lr})}

    def reconfigure(self, changed: set[str]) -> None:
        if "enas_lr" in changed:  # a resume with another lr (--force) takes it from the resume step
            for group in self.learner.optimizer.param_groups:
                group["lr"] = self.conf.lr


register_arch_optimizer("enas", Controller)
