"""ENOT's workflow for plain PyTorch loops: the search rule shared with the `enot` algorithm
(`core`)."""
