"""archnas.enot, ENOT's names for a plain PyTorch loop: the README's example runs as written,
gradient accumulation over a ghost batch equals one step on the concatenated batch, and bad
input is a ValueError or TypeError as ENOT documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from archnas.enot import (
    EnotFixedLatencySearchOptimizer,
    EnotPretrainOptimizer,
    EnotSearchOptimizer,
    EnotTrainOptimizer,
    SearchSpaceModel,
    SearchVariantsContainer,
    build_enot_optimizer,
    make_portable,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 10 s on 2 cores: the README's three phases on digits
def test_the_readme_plain_loop_runs_as_written():
    text = (REPO / "README.md").read_text().split("### ENOT's workflow", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    space, search = scope["space"], scope["search"]
    assert isinstance(search, EnotFixedLatencySearchOptimizer)
    assert space.current_latency <= search.max_latency_value
    assert space.min_latency <= space.median_latency <= space.max_latency
    assert space.forward_latency.item() == pytest.approx(
        sum(p @ torch.tensor(d, dtype=p.dtype) for p, d in
            zip((torch.softmax(space.arch.alpha(label), -1) for label in space.specs),
                space.space_costs.model("macs").table.deltas)).item() + space.space_costs.model("macs").table.base)
    net = scope["network"]
    assert net(scope["x"][:4]).shape == (4, 10)
    portable = make_portable(net)
    net.eval(), portable.eval()
    assert torch.equal(portable(scope["x"][:4]), net(scope["x"][:4]))


def linear_space() -> SearchSpaceModel:
    """No BatchNorm: a step's result does not depend on how its batch is split."""
    torch.manual_seed(0)
    return SearchSpaceModel(nn.Sequential(nn.Flatten(), SearchVariantsContainer([nn.Linear(16, 8), nn.Sequential(
        nn.Linear(16, 8), nn.Tanh())]), nn.Linear(8, 3)))


@pytest.mark.parametrize("phase", ["pretrain", "train"])
def test_k_model_steps_then_step_equal_one_step_on_the_concatenated_batch(phase):
    x, y = torch.randn(12, 16, generator=torch.Generator().manual_seed(1)), torch.arange(12) % 3
    results = []
    for k in (1, 3):
        space = linear_space()
        model = space if phase == "pretrain" else space.get_network_by_indexes([1])
        opt = build_enot_optimizer(phase, model, torch.optim.SGD(
            space.model_parameters() if phase == "pretrain" else model.parameters(), lr=0.5, momentum=0.9))
        for _ in range(2):
            opt.zero_grad()
            for xs, ys in zip(x.chunk(k), y.chunk(k)):
                opt.model_step(lambda: nn.functional.cross_entropy(model(xs), ys).backward())
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*results))


def test_bad_input_is_a_value_or_type_error_as_enot_documents():
    space = linear_space()
    sgd = torch.optim.SGD(space.model_parameters(), lr=0.1)
    with pytest.raises(ValueError, match="unknown phase 'tune'"):
        build_enot_optimizer("tune", space, sgd)
    with pytest.raises(ValueError, match="unknown options bn_tune_batches"):
        build_enot_optimizer("pretrain", space, sgd, bn_tune_batches=3)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        build_enot_optimizer("pretrain", space, "sgd")
    with pytest.raises(TypeError, match="not a SearchSpaceModel"):
        build_enot_optimizer("train", space, sgd)
    with pytest.raises(TypeError, match="must be a SearchSpaceModel"):
        build_enot_optimizer("search", nn.Linear(2, 2), sgd)
    with pytest.raises(ValueError, match="initialize_latency"):
        build_enot_optimizer("search", space, sgd, max_latency_value=10)
    space.initialize_latency("macs", torch.zeros(1, 16))
    with pytest.raises(ValueError, match="below the cheapest"):
        build_enot_optimizer("search", space, sgd, max_latency_value=1)
    with pytest.raises(ValueError, match="unknown cost model|not a registered|unknown"):
        space.initialize_latency("joules", torch.zeros(1, 16))
    assert type(build_enot_optimizer("search", space, sgd)) is EnotSearchOptimizer
    assert isinstance(build_enot_optimizer("pretrain", space, sgd), EnotPretrainOptimizer)
    assert isinstance(build_enot_optimizer("train", nn.Linear(2, 2), sgd), EnotTrainOptimizer)


def test_output_distribution_optimization_trains_the_largest_on_labels_and_the_path_on_its_outputs():
    """One pretrain step with it on equals the sandwich rule written out: the largest architecture's
    label loss plus the sampled path's T^2-scaled KL from the largest's softened logits, one step."""
    x, y = torch.randn(6, 16, generator=torch.Generator().manual_seed(2)), torch.arange(6) % 3
    space = linear_space()
    assert not space.output_distribution_optimization_enabled
    space.initialize_output_distribution_optimization(x[:2])
    assert space.output_distribution_optimization_enabled and space.largest_architecture is not None
    with pytest.raises(RuntimeError, match="already enabled"):
        space.initialize_output_distribution_optimization(x[:2])
    reference = linear_space()
    temperature, weight = 2.0, 0.5
    opt = build_enot_optimizer("pretrain", space, torch.optim.SGD(space.model_parameters(), lr=0.5), seed=3,
                               distill_temperature=temperature, distill_weight=weight)
    opt.zero_grad()
    loss = opt.step(lambda: (lambda loss: (loss.backward(), loss)[1])(nn.functional.cross_entropy(space(x), y)))
    path = space.architecture

    reference.set_architecture(space.largest_architecture)
    teacher = reference(x)
    label_loss = nn.functional.cross_entropy(teacher, y)
    reference.set_architecture(path)
    student = reference(x)
    kl = nn.functional.kl_div(torch.log_softmax(student / temperature, -1), torch.log_softmax(teacher.detach()
                              / temperature, -1), reduction="batchmean", log_target=True) * temperature ** 2
    manual = torch.optim.SGD(reference.model_parameters(), lr=0.5)
    (label_loss + weight * kl).backward()
    manual.step()
    assert torch.allclose(loss, label_loss)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(space.model_parameters(), reference.model_parameters()))
    plain = linear_space()  # and it changes the training: without it the weights end elsewhere
    opt = build_enot_optimizer("pretrain", plain, torch.optim.SGD(plain.model_parameters(), lr=0.5), seed=3)
    opt.step(lambda: nn.functional.cross_entropy(plain(x), y).backward())
    assert not all(torch.allclose(a, b) for a, b in zip(space.model_parameters(), plain.model_parameters()))
