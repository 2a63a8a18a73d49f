"""Training engine: `trainer.Trainer` (hooks, checkpoint/resume), `tester.Tester`, `metrics`,
`optim` (optimizers), `schedules` (LR schedules with warmup), `losses`, `precision` (AMP and
channels_last), `checkpoint.Checkpointer`, `signals` (SIGINT/SIGTERM -> checkpoint and stop).

Import from the submodules; this package imports nothing so that `archnas.training.signals`
stays cheap for the command line.
"""
