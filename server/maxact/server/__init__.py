"""The maxact server: loads ONNX CNNs, derives receptive fields, scans datasets, streams top-k."""
