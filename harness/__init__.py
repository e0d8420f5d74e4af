"""Benchmarks and checks around the service, never installed in the gateway image.

Each module is a `python -m harness.<name>` verb behind a `make` target: they start real servers (Triton, the
gateway, the KServe transformer, an OTLP receiver), drive them, and write `reports/`.
"""
