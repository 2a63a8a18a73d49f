"""Search spaces built from `archnas.space`'s primitives, registered by name (`archnas.space.create_space`):
`nb201` (NAS-Bench-201). Importing this package registers them."""

from archnas.hub.nb201 import NasBench201, parse_nb201_string
from archnas.space.registry import register_space

register_space("nb201", parse_arch=parse_nb201_string)(NasBench201)

__all__ = ["NasBench201", "parse_nb201_string"]
