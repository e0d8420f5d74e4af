"""The online side: the gRPC gateway (session store, identity linkage, tile reranking, Triton client).

Imports only the torch-free serving core (`core`) besides its own modules; import-linter enforces it.
"""
