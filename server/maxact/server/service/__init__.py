"""The gRPC face: thin servicers (request -> record, call `core`, record -> response) and the
decorator that turns the server's errors into rich statuses."""
