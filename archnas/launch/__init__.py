"""Launching experiments from the command line: one experiment, one per seed (`--seeds`), one
per algorithm with a summary (`--algos`)."""
