"""Generated Python stubs for the EDRS gRPC contracts in protos/ (do not edit).

Regenerate with `make proto`; import as `from edrs_proto.persona.v1 import persona_pb2`.
"""
