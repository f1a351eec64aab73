"""Reading and editing ONNX graphs (the image input and its layout, pruning, shape inference):
the base that both the model catalogue (models/) and the receptive-field engine (rf/) use."""
