"""Search spaces built from `archnas.space`'s primitives, registered by name (`archnas.space.create_space`,
a config's `nas.search.space: {name: ...}`). Importing this package registers them:

- `nb201`: NAS-Bench-201's cell space (`NasBench201`; its architecture strings `|op~0|+...`);
- `nasbench101`: NAS-Bench-101's space as NNI's `NasBench101` (its `NasBench101Cell`s; the
  benchmark's `{module_adjacency, module_operations}` specs);
- `proxylessnas`: ProxylessNAS's MobileNetV2-block space with NNI's labels (`ProxylessNAS`; the
  named architecture `proxyless-mobile`);
- `shufflenet`: Single Path One-Shot's ShuffleNetV2 space as NNI's ShuffleNetSpace
  (`ShuffleNetSpace`; the named architecture `spos`);
- `mobilenet`: a MobileNetV2-like space from ENOT's op strings (`MobileNetSpace`, `MIB_k=3_t=6`),
  small enough by default to search 8x8 digits;
- `darts`, `nasnet`, `amoebanet`, `pnas`, `enas`: the NDS cell family as NNI's hub has it
  (`DARTS`, `NASNet`, `AmoebaNet`, `PNAS`, `ENAS`; the named DARTS-format genotypes as architectures);
- `mobilenetv3`: NNI's MobileNetV3Space, TuNAS's space of widths, expand ratios, kernels, SE and
  depths as value choices (`MobileNetV3Space`; the named architectures of NNI's hub,
  `mobilenetv3-large-100`, `mobilenetv3-small-<050|075|100>`, with `searched_model`);
- `autogen`: the space generated from a plain model (`archnas.space.autogen`), such as the
  registered model `plain_cnn` (`PlainCNN`, a small ResNet-like CNN) or a plugin's.
"""

from types import MappingProxyType

from archnas.hub.mobilenet import MobileNetSpace, parse_op
from archnas.hub.mobilenetv3 import MobileNetV3Space, parse_mobilenetv3_arch, searched_model
from archnas.hub.nasbench101 import NasBench101, nb101_spec, parse_nb101_spec
from archnas.hub.nb201 import NasBench201, parse_nb201_string
from archnas.hub.nds import DARTS, ENAS, NDS, PNAS, AmoebaNet, NASNet, parse_nds_arch
from archnas.hub.plain_cnn import PlainCNN
from archnas.hub.proxylessnas import (
    ProxylessNAS,
    from_nni_arch,
    parse_proxylessnas_arch,
    proxyless_mobile_arch,
)
from archnas.hub.shufflenet import ShuffleNetSpace, parse_shufflenet_arch, spos_arch
from archnas.space.autogen import autogen_space
from archnas.space.registry import register_model, register_space

# NNI's parameter names, with the older ones archnas took as aliases; NNI's `num_labels` is the dataset's classes.
NNI = MappingProxyType({"n_classes": "num_labels"})
register_space("nb201", parse_arch=parse_nb201_string,
               aliases={**NNI, "C": "stem_out_channels", "N": "num_modules_per_stack"})(NasBench201)
register_space("nasbench101", parse_mapping=parse_nb101_spec, aliases=NNI)(NasBench101)
register_space("proxylessnas", parse_arch=parse_proxylessnas_arch, aliases=NNI)(ProxylessNAS)
register_space("shufflenet", parse_arch=parse_shufflenet_arch, aliases=NNI)(ShuffleNetSpace)
register_space("mobilenet", aliases=NNI)(MobileNetSpace)
register_space("mobilenetv3", parse_arch=parse_mobilenetv3_arch, aliases=NNI)(MobileNetV3Space)
register_space("darts", parse_arch=parse_nds_arch)(DARTS)
register_space("nasnet", parse_arch=parse_nds_arch)(NASNet)
register_space("amoebanet", parse_arch=parse_nds_arch)(AmoebaNet)
register_space("pnas", parse_arch=parse_nds_arch)(PNAS)
register_space("enas", parse_arch=parse_nds_arch)(ENAS)
register_space("autogen")(autogen_space)
register_model("plain_cnn")(PlainCNN)

__all__ = ["AmoebaNet", "DARTS", "ENAS", "MobileNetSpace", "MobileNetV3Space", "NASNet", "NDS", "NasBench101",
           "NasBench201", "PNAS", "PlainCNN", "ProxylessNAS", "ShuffleNetSpace", "from_nni_arch", "nb101_spec",
           "parse_mobilenetv3_arch", "parse_nb101_spec", "parse_nb201_string", "parse_nds_arch", "parse_op",
           "parse_proxylessnas_arch", "parse_shufflenet_arch", "proxyless_mobile_arch", "searched_model", "spos_arch"]
