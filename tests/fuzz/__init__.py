"""Fuzzing the sidecar: hypothesis strategies for OTLP requests, the in-process
harness that checks the invariant after every case, atheris entry points for raw
bytes, and the corpus of inputs that found bugs or cover the formats."""
