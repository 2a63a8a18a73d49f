"""Search-space autogeneration (archnas.space.autogen): the default architecture computes exactly
what the source model computes; every variant runs, with its weights from the source's (the
strongest channels, embedded or cropped kernels); a skipped residual block is the identity path;
exclude keeps modules whole; an untraceable model or one without a block is one message naming
the module; `archnas stats --space` counts the space exactly per choice; darts and spos search it
through the command and the eval retrains their result."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import archnas.hub  # noqa: F401  (registers autogen and plain_cnn)
from archnas.cli import main
from archnas.errors import SpaceError
from archnas.hub.plain_cnn import BasicBlock, PlainCNN
from archnas.space import LayerChoice, SearchSpaceModel, create_space, fixed_arch, freeze
from archnas.space.autogen import generate_space

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "plugins"))
import autogen_models  # noqa: E402  (the plugin the command lines below --import)

DIGITS = (1, 8, 8)
SMALL = {"widths": [4, 8], "blocks": [1, 1]}  # maps 8 and 4; stages.0.0 is residual, stages.1.0 downsamples
SPACE = "nas.search.space={name: autogen, model: {name: plain_cnn, widths: [4, 8], blocks: [1, 1]}, kernel_sizes: [3, 5]}"
TINY = ["common.tensorboard=false", "common.log_every_steps=0", "dataset.limit_train=120", "dataset.limit_test=60",
        "nas.search.loader.train_batch=40", "nas.search.trainer.epochs=1", "nas.eval.loader.train_batch=40",
        "nas.eval.trainer.epochs=1"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see conftest.one_thread


def trained_stats(net: nn.Module) -> nn.Module:
    """`net` with BatchNorm statistics of its own (not the initial 0 and 1), in eval mode."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, *DIGITS))
    return net.eval()


@pytest.fixture(scope="module")
def source() -> PlainCNN:
    torch.manual_seed(0)
    return trained_stats(PlainCNN(DIGITS, 10, **SMALL))


@pytest.fixture(scope="module")
def space(source) -> SearchSpaceModel:
    return SearchSpaceModel(generate_space(source, DIGITS, kernel_sizes=[3, 5])).eval()


def block_of(space: SearchSpaceModel, label: str) -> LayerChoice:
    return next(c for c in space.choices if c.label_key == label)


def test_the_default_architecture_computes_exactly_what_the_source_computes(source, space):
    assert {label: list(spec.choices) for label, spec in space.specs.items()} == {
        "stem": ["k3", "k5"],
        "stages.0.0": ["w1_k3", "w1_k5", "w0.75_k3", "w0.75_k5", "w0.5_k3", "w0.5_k5", "w0.25_k3", "w0.25_k5", "skip"],
        "stages.1.0": ["w1_k3", "w1_k5", "w0.75_k3", "w0.75_k5", "w0.5_k3", "w0.5_k5", "w0.25_k3", "w0.25_k5"]}
    x = torch.randn(8, *DIGITS)
    with torch.no_grad():
        assert torch.equal(space(x), source(x))
        # a larger kernel embeds the original one: the same function until it trains
        space.set_architecture({"stem": "k5", "stages.0.0": "w1_k5", "stages.1.0": "w1_k5"})
        assert torch.allclose(space(x), source(x), atol=1e-5)
    # the source is left as it was: no choice in it, its own modules
    assert not any(isinstance(m, LayerChoice) for m in source.modules()) and isinstance(source.stages[0][0], BasicBlock)
    # a user's model: depthwise convs, functional activations, a conv with a bias and no BatchNorm
    torch.manual_seed(1)
    mobile = trained_stats(autogen_models.mobile(DIGITS, 10))
    generated = SearchSpaceModel(generate_space(mobile, DIGITS, kernel_sizes=[3, 5, 7])).eval()
    assert list(generated.specs) == ["stem", "blocks.0", "blocks.1"]
    assert list(generated.specs["blocks.1"].choices)[:3] == ["w1_k5", "w1_k3", "w1_k7"]  # its own kernel first
    with torch.no_grad():
        assert torch.equal(generated(x), mobile(x))


def test_every_variant_runs_with_the_right_shapes_and_freezes_to_what_fixed_arch_builds(source, space):
    x = torch.randn(2, *DIGITS)
    default = space.default_architecture()
    with torch.no_grad():
        for label, spec in space.specs.items():
            block = block_of(space, label)
            for name in spec.choices:
                shapes = []
                handle = block.register_forward_hook(lambda m, i, o: shapes.append((i[0].shape, o.shape)))
                space.set_architecture({**default, label: name})
                assert space(x).shape == (2, 10)
                handle.remove()
                (c_in, out), = shapes
                expected = {"stem": (2, 4, 8, 8), "stages.0.0": (2, 4, 8, 8), "stages.1.0": (2, 8, 4, 4)}[label]
                assert tuple(out) == expected, (label, name)
        for seed in range(3):
            arch = space.sample_random_arch(torch.Generator().manual_seed(seed))
            frozen = freeze(space, arch).eval()
            assert not any(type(m).__module__.startswith("archnas.space") for m in frozen.modules())
            with fixed_arch(arch):
                built = generate_space(source, DIGITS, kernel_sizes=[3, 5]).eval()
            assert built.state_dict().keys() == frozen.state_dict().keys()
            assert torch.equal(built(x), space(x)) and torch.equal(frozen(x), space(x))


def test_narrower_variants_keep_the_strongest_channels_and_kernels_embed_or_crop(source, space):
    block = block_of(space, "stages.0.0")
    conv1, bn1, conv2 = source.stages[0][0].conv1, source.stages[0][0].bn1, source.stages[0][0].conv2
    keep = conv1.weight.abs().sum((1, 2, 3)).argsort(descending=True)[:2].sort().values  # w0.5 of 4 channels
    half = block["w0.5_k3"]
    assert torch.equal(half[0].weight, conv1.weight[keep])
    assert torch.equal(half[1].running_mean, bn1.running_mean[keep]) and torch.equal(half[1].weight, bn1.weight[keep])
    assert torch.equal(half[3].weight, conv2.weight[:, keep]) and half[3].out_channels == conv2.out_channels
    wide = block["w0.5_k5"]  # 5x5: the 3x3 kernel at the centre, zeros around
    assert wide[0].kernel_size == (5, 5) and wide[0].padding == (2, 2)
    assert torch.equal(wide[0].weight[..., 1:4, 1:4], conv1.weight[keep]) and wide[0].weight[..., 0, :].abs().sum() == 0
    # a smaller kernel crops the original's centre
    cropped = generate_space(source, DIGITS, kernel_sizes=[1])
    small = cropped.get_submodule("stages.0.0.conv1")["w1_k1"]
    assert small[0].kernel_size == (1, 1) and torch.equal(small[0].weight, conv1.weight[..., 1:2, 1:2])
    # the variants own their weights: training one leaves the source's and the others' alone
    assert half[0].weight.data_ptr() != conv1.weight.data_ptr()
    assert block["w1_k3"][0].weight.data_ptr() not in {conv1.weight.data_ptr(), half[0].weight.data_ptr()}


def test_a_skipped_residual_block_is_its_identity_path(source, space):
    x = torch.randn(4, *DIGITS)
    without = copy.deepcopy(source)
    without.stages[0][0] = nn.Identity()  # relu(x + 0) == x: its input is a relu's output
    with torch.no_grad():
        space.set_architecture({**space.default_architecture(), "stages.0.0": "skip"})
        assert torch.equal(space(x), without(x))
    # only where the shortcut is the identity: the downsampling block has no skip
    assert "skip" not in space.specs["stages.1.0"].choices


def test_multipliers_that_give_the_same_width_are_one_candidate():
    narrow = PlainCNN(DIGITS, 10, widths=[2], blocks=[1])  # 2 inner channels: 0.75 rounds to 2, 0.25 to 0 -> 1
    specs = SearchSpaceModel(generate_space(narrow, DIGITS)).specs
    assert {label: list(spec.choices) for label, spec in specs.items()} == {"stages.0.0": ["w1", "w0.5", "skip"]}


def test_exclude_leaves_modules_whole(source):
    generated = generate_space(source, DIGITS, exclude=["stages.1", "stem"], kernel_sizes=[3, 5])
    assert list(SearchSpaceModel(generated).specs) == ["stages.0.0"]
    kept = generated.get_submodule("stages.1.0")
    assert isinstance(kept, BasicBlock) and torch.equal(kept.conv1.weight, source.stages[1][0].conv1.weight)
    with pytest.raises(SpaceError, match=r"exclude 'stages\.9' is not a module of PlainCNN \(module paths such as stem"):
        generate_space(source, DIGITS, exclude=["stages.9"])


def test_an_untraceable_or_blockless_model_is_one_message_naming_the_module():
    gated = autogen_models.gated(DIGITS, 10)
    with pytest.raises(SpaceError, match=r"torch\.fx cannot trace module 'gate' \(Gate\): .*control flow.*"
                                         r"exclude: \[gate\]"):
        generate_space(gated, DIGITS)
    assert list(SearchSpaceModel(generate_space(gated, DIGITS, exclude=["gate"])).specs) == ["body"]
    with pytest.raises(SpaceError, match=r"autogen: MLP has no convolution block with two variants"):
        generate_space(autogen_models.mlp(DIGITS, 10), DIGITS)
    with pytest.raises(SpaceError, match=r"width_multipliers \[1\.5\] must be .* in \[0, 1\]"):
        create_space("autogen", input_shape=DIGITS, model={"name": "plain_cnn"}, width_multipliers=[1.5])
    with pytest.raises(SpaceError, match=r"unknown model 'resnet'; registered models: plain_cnn"):
        create_space("autogen", input_shape=DIGITS, model={"name": "resnet"})


@pytest.mark.parametrize("model, pattern", [
    ("factory: 'autogen_models:gated'", r"nas\.search\.space \(autogen\): autogen: torch\.fx cannot trace module 'gate'"),
    ("factory: 'autogen_models:mlp'", r"nas\.search\.space \(autogen\): autogen: MLP has no convolution block"),
])
def test_the_command_prints_one_line_for_a_model_it_cannot_use(tmp_path, capsys, model, pattern):
    capsys.readouterr()
    code = main(["--import", "autogen_models", "--config", str(REPO / "confs" / "darts.yaml"),
                 f"common.results_dir={tmp_path}", f"nas.search.space={{name: autogen, model: {{{model}}}}}", *TINY])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("archnas: error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err[-3000:]
    assert re.search(pattern, errors[0]), errors[0]
    assert not any(tmp_path.iterdir())


def test_stats_counts_the_generated_space_per_choice_exactly(capsys):
    capsys.readouterr()
    assert main(["stats", "--config", str(REPO / "confs" / "darts.yaml"), SPACE, "--space"]) == 0
    report = json.loads(capsys.readouterr().out)
    for cost in ("params", "macs"):
        stats = report[cost]
        assert stats["exact"] and stats["check"]["max_abs_error"] == 0, stats
        assert stats["archs"] == 2 * 9 * 8 and stats["min"] < stats["median"] < stats["max"]
        assert stats["arch_min"]["stages.0.0"] == "skip" and stats["arch_max"]["stages.1.0"] == "w1_k5"
    # the largest network is the source model with every 3x3 kernel at 5x5
    with fixed_arch(report["params"]["arch_max"]):
        biggest = create_space("autogen", input_shape=DIGITS, model={"name": "plain_cnn", **SMALL}, kernel_sizes=[3, 5])
    assert report["params"]["max"] == sum(p.numel() for p in biggest.parameters())


@pytest.mark.parametrize("config, extra", [
    ("darts.yaml", []),
    ("spos_nb201.yaml", ["nas.search.spos.evolution={population: 4, parents: 2, mutations: 2, crossovers: 2, "
                         "generations: 1}", "nas.search.spos.bn_recalibration.batches=1"]),
])
def test_darts_and_spos_search_the_generated_space_and_the_eval_retrains_it(tmp_path, capsys, config, extra):
    assert main(["--config", str(REPO / "confs" / config), "--exp-name", "ag", f"common.results_dir={tmp_path}",
                 SPACE, *TINY, *extra]) == 0, capsys.readouterr().err[-3000:]
    exp = tmp_path / "ag"
    searched = json.loads((exp / "search" / "arch.json").read_text())["arch"]
    assert set(searched) == {"stem", "stages.0.0", "stages.1.0"}
    assert json.loads((exp / "eval" / "arch.json").read_text())["arch"] == searched
    result = json.loads((exp / "result.json").read_text())
    with fixed_arch(searched):
        net = create_space("autogen", input_shape=DIGITS, model={"name": "plain_cnn", **SMALL}, kernel_sizes=[3, 5])
    assert result["eval"]["params"] == sum(p.numel() for p in net.parameters())
    assert 0.0 <= result["eval"]["test_top1"] <= 1.0


def test_the_readme_example_runs_as_written():
    """README "Search space autogeneration": its Python block."""
    text = (REPO / "README.md").read_text().split("### Search space autogeneration", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert isinstance(scope["small"], nn.Module) and scope["small"](scope["x"]).shape == (2, 10)
