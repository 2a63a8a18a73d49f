"""The mobile hub spaces (proxylessnas, shufflenet, mobilenet): they build and run at digits,
MNIST and ImageNet sizes, in search mode and frozen; freeze equals the space and fixed_arch at
random architectures; soft weights (DARTS) and the search trainers drive them; architectures round
trip; costs are additive over the choices; the published networks have NNI's counts; bad input is
one SpaceError naming the culprit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import archnas.hub  # noqa: F401  (registers the spaces)
from archnas.errors import SpaceError
from archnas.hub.mobilenet import parse_op
from archnas.hub.proxylessnas import from_nni_arch, proxyless_mobile_arch
from archnas.hub.shufflenet import spos_arch
from archnas.nas.spaces import module_space
from archnas.space import SearchSpaceModel, Weighting, create_space, fixed_arch, freeze
from archnas.space.arch_io import parse_arch, save_arch
from archnas.latency import SpaceCosts
from archnas.stats import model_stats

REPO = Path(__file__).resolve().parents[1]
DIGITS = (1, 8, 8)
# Each space at test size: the ImageNet widths cut down (the structure, labels and strides are the space's).
SMALL = {
    "proxylessnas": {"width_mult": 0.25},
    "shufflenet": {"stage_out_channels": (8, 16, 32, 48, 64, 64)},
    "mobilenet": {},
}
# The side of the map the head pools at each input size (strides adapt below 2x2, see the modules).
POOLED_SIDE = {
    "proxylessnas": {8: 2, 28: 2, 224: 7},
    "shufflenet": {8: 2, 28: 2, 224: 7},
    "mobilenet": {8: 2, 28: 7, 224: 56},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see conftest.one_thread


def space_modules(net: nn.Module) -> set[str]:
    return {type(m).__name__ for m in net.modules() if type(m).__module__.startswith("archnas.space")}


def small(name: str, shape=DIGITS, **extra) -> nn.Module:
    return create_space(name, input_shape=shape, n_classes=10, **SMALL[name], **extra)


def fixed(name: str, arch: dict, shape=DIGITS) -> nn.Module:
    with fixed_arch(arch):
        return small(name, shape)


def pooled_side(net: nn.Module, x: torch.Tensor) -> int:
    pool = next(m for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d))
    seen = []
    handle = pool.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[-1]))
    try:
        net(x)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("shape", [DIGITS, (1, 28, 28), (3, 224, 224)], ids=["digits", "mnist", "imagenet"])
def test_each_space_runs_in_search_mode_and_frozen(name, shape):
    """At 224 the spaces' own widths; smaller inputs get the test widths."""
    torch.manual_seed(0)
    model = create_space(name, input_shape=shape, n_classes=10, **(SMALL[name] if shape[1] < 224 else {}))
    space = SearchSpaceModel(model).eval()
    arch = space.sample_random_arch(torch.Generator().manual_seed(1))
    x = torch.randn(1, *shape)
    with torch.no_grad():
        logits = space(x)
        net = freeze(space, arch).eval()
        assert logits.shape == (1, 10) and torch.isfinite(logits).all()
        assert not space_modules(net)
        torch.testing.assert_close(net(x), logits)
        assert pooled_side(net, x) == POOLED_SIDE[name][shape[1]]


@pytest.mark.parametrize("name", list(SMALL))
def test_freeze_equals_the_space_and_fixed_arch_at_random_architectures(name):
    torch.manual_seed(0)
    space = SearchSpaceModel(small(name))
    space.train()
    x = torch.randn(8, *DIGITS)
    space(x)  # running statistics that are not the initial ones
    space.eval()
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        arch = space.sample_random_arch(generator)
        net = freeze(space, arch).eval()
        assert not space_modules(net), space_modules(net)
        with torch.no_grad():
            torch.testing.assert_close(net(x), space(x))
        fresh = fixed(name, arch)
        assert not space_modules(fresh)
        assert list(fresh.state_dict()) == list(net.state_dict())
        assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", list(SMALL))
def test_soft_weights_mix_every_candidate_and_train_the_architecture(name):
    """DARTS's weighting: every candidate of every block in one forward, gradients to every alpha."""
    torch.manual_seed(0)
    space = SearchSpaceModel(small(name)).train()
    space.arch.use(Weighting())
    loss = space(torch.randn(4, *DIGITS)).square().mean()
    loss.backward()
    grads = {label: space.arch.alpha(label).grad for label in space.specs}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), [k for k, g in grads.items() if g is None]


@pytest.mark.parametrize("algo,space", [("gdas", "{name: shufflenet, stage_out_channels: [8, 16, 32, 48, 64, 64]}"),
                                        ("darts", "{name: mobilenet}")])
def test_the_search_trainers_step_a_hub_space(tmp_path, algo, space):
    """The same Searcher and ArchTrainer as for every space: weights and alphas apart, one step moves the alphas."""
    from tiny_algos import tiny_conf

    from archnas.context import RunContext
    from archnas.nas.phase import Experiment
    from archnas.nas.registry import algorithm_class
    from archnas.nas.searcher import Searcher, load_data

    conf = tiny_conf(algo, f"common.results_dir={tmp_path}", f"nas.search.space={space}")
    run = RunContext.create(conf, tmp_path / "exp", [])
    searcher = Searcher(Experiment(run, algorithm_class(algo)(conf)))
    ctx = run.phase("search", conf.nas.search)
    data = load_data(ctx, conf.nas.search.loader)
    model = module_space(conf.nas.search.space).supernet(data.info)
    model.arch.use(searcher.strategy.weighting())
    trainer = searcher.build_trainer(ctx, model, "fp", data)
    weights = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert weights.isdisjoint(id(p) for p in model.arch_params())
    before = [p.detach().clone() for p in model.arch_params()]
    trainer.run_step(next(data.loader("train", training=True).epoch(0)))
    assert any(not torch.equal(a, p) for a, p in zip(before, model.arch_params()))
    ctx.close()


@pytest.mark.parametrize("name", list(SMALL))
def test_architectures_round_trip_through_files(tmp_path, name):
    space = SearchSpaceModel(small(name))
    arch = space.sample_random_arch(torch.Generator().manual_seed(0))
    path = save_arch(tmp_path, arch, name, space.labels_key())
    assert parse_arch(str(path), space.labels_key()) == arch
    assert json.loads((tmp_path / "arch.json").read_text())["arch"] == arch
    assert space.check_arch(parse_arch(json.dumps(arch))) == arch


def test_named_architectures_are_read_wherever_an_architecture_is():
    for name, text, arch in (("proxylessnas", "proxyless-mobile", proxyless_mobile_arch()),
                             ("shufflenet", "spos", spos_arch())):
        config_space = module_space({"name": name, **SMALL[name]})
        supernet = SearchSpaceModel(small(name))
        assert config_space.parse(text) == arch and supernet.check_arch(arch) == arch
    with pytest.raises(SpaceError, match=r"proxylessnas: unknown architecture name 'proxyless-gpu'; named "
                                         r"architectures: proxyless-mobile"):
        module_space({"name": "proxylessnas"}).parse("proxyless-gpu")


def test_nni_proxylessnas_architectures_become_zero_blocks():
    """NNI 3.0 searches depth by `s<stage>_depth`; here the blocks past the depth are `zero`."""
    arch = proxyless_mobile_arch()
    assert len(arch) == 21 and arch["s2_i1"] == "k3e3" and arch["s2_i2"] == arch["s2_i3"] == "zero"
    assert arch["s7_i0"] == "k7e6" and not any(label.endswith("_depth") for label in arch)
    assert from_nni_arch({"s3_depth": 1, "s3_i0": "k3e6"}) == {"s3_i0": "k3e6", "s3_i1": "zero", "s3_i2": "zero",
                                                               "s3_i3": "zero"}
    with pytest.raises(SpaceError, match="s4_depth is 5, not a depth in 1..4"):
        from_nni_arch({"s4_depth": 5})
    space = SearchSpaceModel(small("proxylessnas"))
    with pytest.raises(SpaceError, match=r"'s2_i0': 'zero' is not one of its candidates k3e3, k5e3, k7e3, k3e6"):
        space.check_arch({**arch, "s2_i0": "zero"})  # a stage's first block changes the shape: never skipped
    with pytest.raises(SpaceError, match=r"unknown labels 's2_depth'"):
        space.check_arch({**arch, "s2_depth": 2})


@pytest.mark.parametrize("name", list(SMALL))
def test_costs_are_additive_over_the_choices(name):
    """What issue 17's latency models rely on: each block's choice changes its own cost only."""
    space = SearchSpaceModel(small(name))
    out = SpaceCosts(space.specs, lambda arch: fixed(name, arch), list(DIGITS), held_out=3).report(["params", "macs"])
    for key in ("params", "macs"):
        assert out[key]["exact"] and out[key]["method"].startswith("per-choice table, exact"), out[key]["method"]
        assert out[key]["min"] < out[key]["max"]
        for end in ("min", "max"):
            assert model_stats(fixed(name, out[key][f"arch_{end}"]), list(DIGITS))[key] == out[key][end]


# The published networks at 3x224x224, 1000 classes, counted as `archnas stats` counts (conv and
# linear multiply-adds, no bias adds). NNI 3.0's own networks (`ProxylessNAS.load_searched_model(
# "proxyless-mobile")`, `ShuffleNetSpace.load_searched_model("spos")`, in a scratch venv with
# nni==3.0) give the same numbers, and with their weights loaded into these bitwise the same logits.
#
# proxyless-mobile, 4,080,512 parameters and 320,427,584 multiply-adds:
#   stem 3x3 conv 3->32 at 112^2: 864 + BN 64 = 928; 864 * 112^2 = 10,838,016
#   stage 1 (dw 3x3 32, 1x1 32->16): 896; 10,035,200
#   s2 (k5e3, k3e3; two zero blocks) 11,216; 40,190,976. s2_i0 alone: 1x1 16->48 at 112^2 (768 + 96),
#     dw 5x5 48 at 56^2 (1,200 + 96), 1x1 48->32 (1,536 + 64) = 3,760; 9,633,792 + 3,763,200 + 4,816,896
#   s3 49,640; 44,462,208   s4 178,240; 39,701,760   s5 290,112; 55,657,728
#   s6 1,204,800; 66,523,968   s7 (k7e6 192->320 at 7^2) 651,520; 31,667,328
#   head: 1x1 320->1280 at 7^2 409,600 + BN 2,560; 20,070,400; linear 1280 * 1000 + 1000; 1,280,000
# spos, 3,558,464 parameters and 322,918,720 multiply-adds: stem 464; 5,419,008, the 20 blocks
# 1,876,592; 284,363,072, last 1x1 640->1024 657,408; 32,112,640, linear (no bias) 1,024,000; 1,024,000.
PUBLISHED = [("proxylessnas", proxyless_mobile_arch, 4_080_512, 320_427_584),
             ("shufflenet", spos_arch, 3_558_464, 322_918_720)]


@pytest.mark.parametrize("name,arch_of,params,macs", PUBLISHED, ids=["proxyless-mobile", "spos"])
def test_published_networks_have_nnis_counts(name, arch_of, params, macs):
    shape = (3, 224, 224)
    arch = arch_of()
    net = freeze(SearchSpaceModel(create_space(name, input_shape=shape, n_classes=1000)), arch)
    stats = model_stats(net, list(shape))
    assert (stats["params"], stats["macs"]) == (params, macs)
    with fixed_arch(arch):
        fresh = create_space(name, input_shape=shape, n_classes=1000)
    assert list(fresh.state_dict()) == list(net.state_dict())
    assert sum(p.numel() for p in fresh.parameters()) == params


def test_mobilenet_builds_enots_op_strings_per_stage():
    space = SearchSpaceModel(create_space("mobilenet", input_shape=DIGITS, n_classes=10,
                                          search_ops=[["MIB_k=3_t=1"], ["Conv_k=3_activation=hswish", "conv1x1-skip",
                                                                        "identity"], ["MIB_k=7_t=4.5_activation=swish"]],
                                          blocks_count=[1, 2, 1]))
    specs = {label: spec.choices for label, spec in space.specs.items()}
    assert specs == {"s1_i0": ("MIB_k=3_t=1",), "s2_i0": ("Conv_k=3_activation=hswish", "conv1x1-skip"),
                     "s2_i1": ("Conv_k=3_activation=hswish", "conv1x1-skip", "identity"),
                     "s3_i0": ("MIB_k=7_t=4.5_activation=swish",)}  # identity only where the shape is kept
    net = freeze(space, {"s1_i0": "MIB_k=3_t=1", "s2_i0": "conv1x1-skip", "s2_i1": "identity",
                         "s3_i0": "MIB_k=7_t=4.5_activation=swish"})
    first, skip, identity, mib = net.blocks
    assert first.shortcut and len(first.body) == 2  # t=1: no expansion; 8 -> 8 at stride 1: a residual
    assert not skip.shortcut and skip.body[0].kernel_size == (1, 1) and skip.body[0].stride == (2, 2)
    assert isinstance(identity, nn.Identity)
    assert mib.body[0][0].out_channels == round(16 * 4.5) and isinstance(mib.body[0][2], nn.SiLU)
    assert parse_op("MIB_k=5_t=3").params == {"k": 5, "t": 3.0, "activation": "relu6"}


GRAMMAR = "op strings are MIB_k=<odd kernel>_t=<expansion>"
BAD = [
    ("mobilenet", {"search_ops": ["MIB_k=4_t=6"]}, f"op 'MIB_k=4_t=6' has kernel size 4: it must be odd.*{GRAMMAR}"),
    ("mobilenet", {"search_ops": ["MBConv_k=3"]}, f"op 'MBConv_k=3' is not a known op.*{GRAMMAR}"),
    ("mobilenet", {"search_ops": ["MIB_k=3_e=6"]}, "op 'MIB_k=3_e=6' has an unknown key 'e' .MIB takes k, t, activation"),
    ("mobilenet", {"search_ops": ["MIB_k3"]}, "op 'MIB_k3' is malformed"),
    ("mobilenet", {"search_ops": ["MIB_activation=mish"]}, "unknown activation 'mish'"),
    ("mobilenet", {"search_ops": [["MIB"], ["MIB"]]}, "search_ops has 2 lists for 3 stages"),
    ("mobilenet", {"search_ops": ["MIB", "MIB"]}, "stage 1 lists 'MIB' twice"),
    ("mobilenet", {"search_ops": ["identity"]}, ("block s2_i0 changes the shape .8 -> 16 channels, stride 2. and its "
                                                 "only candidate is identity")),
    ("mobilenet", {"blocks_stride": [1, 3, 2]}, r"strides \[3\] must be 1 or 2"),
    ("mobilenet", {"blocks_count": [1, 2]}, "one entry per stage"),
    ("proxylessnas", {"widht_mult": 0.5}, "space proxylessnas: unknown parameters widht_mult; it takes width_mult"),
    ("proxylessnas", {"base_widths": [32, 16]}, "base_widths .32, 16. needs 9 widths"),
    ("proxylessnas", {"width_mult": 0}, "the width multiplier 0 must be positive"),
    ("shufflenet", {"stage_out_channels": [16, 63, 160, 320, 640, 1024]}, r"stage widths \[63\] must be even"),
    ("shufflenet", {"stage_repeats": [4, 4]}, "needs 4 widths"),
]


@pytest.mark.parametrize("name,params,message", BAD, ids=[f"{n}-{next(iter(p))}-{i}" for i, (n, p, _) in enumerate(BAD)])
def test_bad_input_is_a_space_error_naming_the_culprit(name, params, message):
    with pytest.raises(SpaceError, match=message):
        create_space(name, input_shape=DIGITS, n_classes=10, **params)


def test_archnas_stats_counts_hub_spaces_and_refuses_bad_op_strings(capsys):
    from archnas.cli import main

    config = ["stats", "--config", str(REPO / "confs" / "darts_nb201.yaml")]
    assert main([*config, "nas.search.space={name: proxylessnas, width_mult: 0.25}", "--arch", "proxyless-mobile"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["arch"] == proxyless_mobile_arch()
    assert counted["params"] == model_stats(fixed("proxylessnas", proxyless_mobile_arch()), list(DIGITS))["params"]
    assert main([*config, "nas.search.space={name: mobilenet, search_ops: [MIB_k=3_t=6, MIB_k=3_q=6]}", "--space"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "op 'MIB_k=3_q=6' has an unknown key 'q'" in lines[0] and GRAMMAR in lines[0], lines
