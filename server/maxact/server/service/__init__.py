"""Thin gRPC servicers: validate, call the engine modules, convert to protos, stream."""
