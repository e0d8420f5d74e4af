"""The load -> validate -> sessionize -> featurize pipeline as a PySpark job, writing the shared shard format.

    python -m training.spark.job --input DATA_URI --output SHARDS_URI [--featurizer featurizer.json]
    spark-submit --py-files training.zip -m ... (see docs/scale.md, "Submitting to a cluster")

The input is a data directory (its events.jsonl or events.parquet, as the contract picks), one events file,
or a directory of *.jsonl / *.parquet parts, at any URI Hadoop reads (local paths, file://, hdfs://, s3a://).
Every task reuses training.core: the contract's pydantic model judges each row, training.core.sessionize cuts
each visitor's events and the Featurizer encodes them, so there is one contract and one featurizer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from training.core.contract import EVENT_FILES
from training.core.featurizer import Featurizer, FeaturizerConfig
from training.spark import rows as R

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSettings:
    input: str
    output: str
    featurizer: str | None = None
    master: str | None = "local[2]"
    partitions: int | None = None
    """Visitor partitions of the sessionize/featurize stage; default: 4 per core in local mode, else Spark's."""
    driver_memory: str = "1g"


def spark_session(master: str | None, app: str = "intent-featurize", driver_memory: str = "1g") -> Any:
    """A SparkSession; in local mode with the UI off and this interpreter for the Python workers."""
    from pyspark.sql import SparkSession

    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = "local[2]"  # not under spark-submit, which starts the JVM first and names the master itself
    builder = SparkSession.builder.appName(app)
    if master:
        builder = builder.master(master)
    if master and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = (builder.config("spark.ui.enabled", "false").config("spark.driver.memory", driver_memory)
                   .config("spark.sql.session.timeZone", "UTC").config("spark.ui.showConsoleProgress", "false"))
    return builder.getOrCreate()


# -- Hadoop file system, so every URI scheme Spark reads works the same -----------------------------------------
def _path(spark: Any, uri: str) -> tuple[Any, Any]:
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark._jsc.hadoopConfiguration()), path


def input_files(spark: Any, uri: str) -> list[str]:
    """The events files of `uri`: a data directory's events file (contract order), else its *.jsonl/*.parquet."""
    fs, path = _path(spark, uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri}: no such file or directory")
    if not fs.getFileStatus(path).isDirectory():
        return [path.toString()]
    for name in EVENT_FILES:
        candidate = spark._jvm.org.apache.hadoop.fs.Path(path, name)
        if fs.exists(candidate):
            return [candidate.toString()]
    names = sorted(s.getPath().toString() for s in fs.listStatus(path)
                   if s.getPath().getName().endswith((".jsonl", ".parquet")))
    if not names:
        raise FileNotFoundError(f"{uri}: no events file (expected one of {', '.join(EVENT_FILES)}, or *.jsonl parts)")
    return names


def _write_text(spark: Any, uri: str, text: str) -> None:
    fs, path = _path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def _read_text(spark: Any, uri: str) -> str:
    fs, path = _path(spark, uri)
    stream = fs.open(path)
    try:
        return str(spark._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


# -- stages ------------------------------------------------------------------------------------------------------
def validated(spark: Any, files: list[str]) -> Any:
    """One DataFrame of accepted events and problems (R.VALIDATED_DDL), each row judged by the contract."""
    sc = spark.sparkContext
    parts = []
    for idx, uri in enumerate(files):
        if uri.endswith(".parquet"):
            df = spark.read.parquet(uri).select("*", "_metadata.row_index")
            names = [c for c in df.columns if c != "row_index"]
            rdd = df.rdd.map(lambda row, i=idx, n=names: (i, row["row_index"] + 1,
                                                           {k: row[k] for k in n if row[k] is not None}))
        else:
            last = _unterminated_last_line(spark, uri)
            rdd = sc.textFile(uri).zipWithIndex().map(
                lambda t, i=idx, n=last: (i, t[1] + 1, t[0] if t[1] == n else t[0] + "\n"))
        parts.append(rdd)
    rdd = parts[0] if len(parts) == 1 else sc.union(parts)
    return spark.createDataFrame(rdd.mapPartitions(R.validate_partition), R.VALIDATED_DDL, verifySchema=False)


def _unterminated_last_line(spark: Any, uri: str) -> int:
    """Index of the file's last line when it lacks a newline, else -1. The contract parses each line with its
    newline (Python's file iteration keeps it), and JSON errors at the end of a line cite that position."""
    fs, path = _path(spark, uri)
    size = fs.getFileStatus(path).getLen()
    if size == 0:
        return -1
    stream = fs.open(path)
    try:
        stream.seek(size - 1)
        last_byte = stream.read()
    finally:
        stream.close()
    if last_byte in (ord("\n"), ord("\r")):
        return -1
    return int(spark.sparkContext._jsc.textFile(uri).count()) - 1


def by_visitor(events: Any, partitions: int) -> Any:
    """Each visitor's events in one partition, in (ts, file order): the order training.core.sessionize sorts by."""
    return (events.select(*R.EVENT_FIELDS, "file_idx", "line").repartition(partitions, "anonymous_id")
            .sortWithinPartitions("anonymous_id", "ts", "file_idx", "line"))


def fit_featurizer(visits: Any, config: FeaturizerConfig) -> Featurizer:
    """Token counts and moments aggregated by Spark; the Featurizer built on the driver."""
    blobs = visits.mapInArrow(partial(R.fit_partition, config=config), "blob string").collect()
    return R.featurizer_from_partials((row["blob"] for row in blobs), config)


def write_problems(spark: Any, checked: Any, names: list[str], uri: str) -> int:
    """invalid_rows.jsonl in the contract's order (file, line, then the model's error order)."""
    problems = (checked.where("kind = 1").select("file_idx", "line", "k", "field", "reason")
                .orderBy("file_idx", "line", "k"))
    lines = [json.dumps({"file": names[r["file_idx"]], "line": r["line"], "field": r["field"], "reason": r["reason"]})
             for r in problems.toLocalIterator()]
    _write_text(spark, uri, "".join(line + "\n" for line in lines))
    return len(lines)


def write_parts(spark: Any, shards: Any, output: str) -> int:
    """Spark writes under _spark/; its part files are renamed to part-NNNNN.parquet (the shared format)."""
    staging = output.rstrip("/") + "/_spark"
    shards.write.mode("overwrite").parquet(staging)
    fs, path = _path(spark, staging)
    parts = sorted(s.getPath().toString() for s in fs.listStatus(path) if s.getPath().getName().startswith("part-"))
    hadoop_path = spark._jvm.org.apache.hadoop.fs.Path
    for i, part in enumerate(parts):
        fs.rename(hadoop_path(part), hadoop_path(f"{output.rstrip('/')}/part-{i:05d}.parquet"))
    fs.delete(path, True)
    return len(parts)


def run(spark: Any, settings: JobSettings) -> dict:
    """The whole job on a running SparkSession -> the _SUCCESS.json document."""
    from pyspark import StorageLevel

    start = time.perf_counter()
    files = input_files(spark, settings.input)
    names = [f.rstrip("/").rsplit("/", 1)[-1] for f in files]
    fs, out = _path(spark, settings.output)
    if fs.exists(out):
        fs.delete(out, True)
    fs.mkdirs(out)
    checked = validated(spark, files).persist(StorageLevel.MEMORY_AND_DISK)
    n_problems = write_problems(spark, checked, names, f"{settings.output.rstrip('/')}/invalid_rows.jsonl")
    partitions = settings.partitions or _default_partitions(spark)
    visits = by_visitor(checked.where("kind = 0"), partitions).persist(StorageLevel.MEMORY_AND_DISK)
    n_events = visits.count()
    if settings.featurizer:
        featurizer = _featurizer_from_text(_read_text(spark, settings.featurizer))
    else:
        featurizer = fit_featurizer(visits, FeaturizerConfig())
    _write_text(spark, f"{settings.output.rstrip('/')}/featurizer.json", json.dumps(featurizer.to_dict(), indent=1))
    shards = visits.mapInArrow(partial(R.encode_partition, featurizer=featurizer), R.SHARD_DDL)
    n_parts = write_parts(spark, shards, settings.output)
    n_sessions = spark.read.parquet(f"{settings.output.rstrip('/')}/part-*.parquet").count() if n_parts else 0
    done = {"sessions": n_sessions, "events": n_events, "invalid_rows": n_problems,
            "featurizer_version": featurizer.version, "parts": n_parts}
    _write_text(spark, f"{settings.output.rstrip('/')}/_SUCCESS.json", json.dumps(done, indent=1))
    checked.unpersist()
    visits.unpersist()
    log.info("%d events -> %d sessions in %d parts, %d invalid rows, %.1f s", n_events, n_sessions, n_parts,
             n_problems, time.perf_counter() - start)
    return done


def _featurizer_from_text(text: str) -> Featurizer:
    """Featurizer.load reads a local path; this reads the same JSON fetched from any URI."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "featurizer.json"
        path.write_text(text)
        return Featurizer.load(path)


def _default_partitions(spark: Any) -> int:
    return max(1, int(spark.sparkContext.defaultParallelism) * 4) if spark.sparkContext.master.startswith("local") \
        else int(spark.conf.get("spark.sql.shuffle.partitions"))


def run_job(input: str, output: str, featurizer: str | None = None, master: str | None = "local[2]",
            partitions: int | None = None) -> dict:
    """Start Spark, run the job, stop Spark: the entry point for harnesses (e.g. harness/bench_data.py)."""
    settings = JobSettings(input, output, featurizer, master, partitions)
    spark = spark_session(settings.master, driver_memory=settings.driver_memory)
    try:
        return run(spark, settings)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.spark.job", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="data directory, events file or directory of parts (any URI)")
    parser.add_argument("--output", required=True, help="shard directory URI (replaced if it exists)")
    parser.add_argument("--featurizer", help="featurizer.json URI to encode with (else fitted on training visitors)")
    parser.add_argument("--master", default=None,
                        help="Spark master (local[2], spark://host:7077, yarn, k8s://...); else local[2]")
    parser.add_argument("--partitions", type=int, default=None, help="visitor partitions (default: see docs/scale.md)")
    parser.add_argument("--driver-memory", default="1g", help="local mode only; spark-submit sets it on a cluster")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = JobSettings(args.input, args.output, args.featurizer, args.master, args.partitions, args.driver_memory)
    spark = spark_session(settings.master, driver_memory=settings.driver_memory)
    try:
        print(json.dumps(run(spark, settings)))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
