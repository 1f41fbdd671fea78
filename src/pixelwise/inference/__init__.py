"""Inference: the Predictor, prediction over files, tiling, the ONNX engine and export, outputs."""
