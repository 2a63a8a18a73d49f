"""Manual: evaluate a given architecture without searching.

`nas.eval.final_desc` names it: a desc file (e.g. a previous search's final_model_desc.yaml), a
DARTS genotype string, or a named genotype such as DARTS_V2; for a space over a module
(`nas.search.space` or `nas.eval.space`), an architecture file, a `{label: choice}` mapping or a
NAS-Bench-201 string.
"""

from archnas.errors import ConfigError
from archnas.nas.evaluater import Evaluater
from archnas.nas.registry import register_algorithm
from archnas.nas.strategy import Strategy


@register_algorithm
class Manual(Strategy):
    name = "manual"
    phases = (Evaluater,)

    def check(self) -> None:
        if not self.conf.nas.eval.final_desc:
            raise ConfigError("manual: set nas.eval.final_desc to a desc file, a genotype string or a named "
                              "genotype such as DARTS_V2 (for a space over a module: an architecture file, a "
                              "{label: choice} mapping or a NAS-Bench-201 string)")
