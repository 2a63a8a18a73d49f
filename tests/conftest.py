"""The built-in algorithms register their config sections when imported, as the `archnas`
command does at start; tests that load configs in process need them too."""

import archnas.algos  # noqa: F401
