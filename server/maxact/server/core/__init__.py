"""The operations without a transport: plain typed records in, records and iterators of
domain events out, the server's own errors. `service/` (gRPC) converts, calls, converts."""
