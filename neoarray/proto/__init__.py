"""Generated protobuf and gRPC code: never edit, run scripts/gen_proto.py."""
