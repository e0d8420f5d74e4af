"""The online side: the gRPC gateway (session store, identity linkage, tile reranking, Triton client).

Of training/ it imports only the torch-free serving core (`training.core`); import-linter enforces it.
"""
