"""The NAS machinery on top of models and trainers: search, finalize, evaluate, run experiments."""
