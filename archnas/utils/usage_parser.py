"""argparse whose mistakes are usage errors like every other: the command prints them as its one
`archnas: error:` line and exits 2 (argparse would print its own `archnas stats: error:` and exit)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from archnas.errors import ConfigError


class UsageParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")
