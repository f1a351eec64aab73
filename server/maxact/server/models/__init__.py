"""Models: find and load ONNX files, sessions, upload (graph reading lives in graph/)."""
