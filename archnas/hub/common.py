"""What the hub's mobile spaces share: the checks of their common parameters, and the parser of
their named architectures (the `parse_arch=` hook of `register_space`)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from archnas.errors import SpaceError


def check_space_params(space: str, input_shape: Sequence[int], width_mult: float, dropout_rate: float,
                       min_size: int) -> None:
    """What the mobile spaces refuse alike (a SpaceError naming the space and the value)."""
    if len(input_shape) != 3 or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in input_shape):
        raise SpaceError(f"{space}: input_shape {list(input_shape)} must be [channels, height, width]")
    if not width_mult > 0:
        raise SpaceError(f"{space}: the width multiplier {width_mult} must be positive")
    if not 0 <= dropout_rate < 1:
        raise SpaceError(f"{space}: dropout_rate {dropout_rate} must be in [0, 1)")
    if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1:
        raise SpaceError(f"{space}: min_size {min_size!r} must be a positive int")


def named_arch_parser(space: str, named: Mapping[str, Callable[[], dict]]) -> Callable[[str], dict]:
    """The parser of a space's architecture names (`proxyless-mobile`): the name's `{label: choice}`,
    or a SpaceError listing the names there are."""
    def parse(text: str) -> dict:
        name = text.strip()
        if name not in named:
            raise SpaceError(f"{space}: unknown architecture name {name!r}; named architectures: {', '.join(named)} "
                             "(or give a {label: choice} mapping or an architecture file)")
        return named[name]()

    return parse
