"""gRPC servicers: validate, convert from protobuf, call the engine, convert back."""
