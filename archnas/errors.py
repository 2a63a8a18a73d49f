"""Exceptions that the command line turns into one readable message and exit code 2.

Anything raised from user input (a config file, an override, a desc file, a checkpoint that
does not match the run) derives from :class:`UsageError`, so the CLI can tell a user's
mistake, which deserves a message and no traceback, from a bug, which deserves a traceback.
"""


class UsageError(Exception):
    """A problem with what the user asked for; the message says what and where."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file, include, `_copy` reference or override is invalid."""


class DescError(UsageError):
    """A model description file or genotype is invalid."""


class CheckpointError(UsageError):
    """A checkpoint cannot be used to resume this run."""


class DatasetError(UsageError):
    """A dataset cannot be found or read."""


class SpaceError(UsageError):
    """A search space, or an architecture of one, is invalid (a label, a value, a nesting)."""


class ExportError(UsageError):
    """A trained network cannot be exported as asked: no final network, a format that cannot
    express it, or an exported model whose outputs differ from the trained one's."""


class PlotError(UsageError):
    """A results folder cannot be drawn: not an experiment or summary archnas wrote, nothing of it
    finished, or a record in it that is not what archnas writes."""


class OutputError(UsageError):
    """A result, checkpoint or cache file cannot be written: a read-only or full file system, no
    permission. Files written before stay as they were (writes are atomic)."""
