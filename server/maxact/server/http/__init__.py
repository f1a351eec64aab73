"""The HTTP/JSON face of the server: FastAPI over the transport-neutral core, served by
uvicorn in the same event loop as the grpc.aio server."""
