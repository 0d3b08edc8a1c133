"""protobench."""
