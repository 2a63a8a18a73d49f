"""Trained networks out of archnas: ONNX, TorchScript, `torch.export` programs and standalone PyTorch
source, each checked against the trained network (`network.py`), and the ONNX export the `ort_ms`
cost model times (`onnx.py`). The export stage and `archnas export` are `archnas.nas.export_stage`
and `archnas.launch.export`."""
