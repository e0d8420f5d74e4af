"""The online side: the gRPC gateway (session store, identity linkage, tile reranking, Triton client).

Never imports torch: featurization is the shared numpy-only training.featurizer.
"""
