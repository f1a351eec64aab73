"""Models: find and load ONNX files, graph surgery, shapes, sessions, upload."""
