"""The offline pipeline as a PySpark job, for data that outgrows one machine (see docs/scale.md).

`training.spark.job.run_job(input, output)` runs it; `python -m training.spark.job --help` is the command line.
"""
