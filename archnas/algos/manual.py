"""Manual: evaluate a given architecture without searching.

`nas.eval.final_desc` names it: a desc file (e.g. a previous search's final_model_desc.yaml), a
DARTS genotype string, or a named genotype such as DARTS_V2.
"""

from archnas.errors import ConfigError
from archnas.nas.runner import ExperimentResult, ExperimentRunner, register_algorithm


@register_algorithm("manual")
class ManualRunner(ExperimentRunner):
    searches = False

    def run(self, search: bool = True, eval: bool = True) -> ExperimentResult:
        if not self.conf.nas.eval.final_desc:
            raise ConfigError("manual: set nas.eval.final_desc to a desc file, a genotype string or a named "
                              "genotype such as DARTS_V2")
        return super().run(search=False, eval=eval)
