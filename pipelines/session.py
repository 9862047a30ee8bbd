"""The SparkSession smelter runs on: local[*] by default, any master spark-submit was given otherwise."""

from __future__ import annotations

import os
import sys

#: settings smelter needs whatever the master; spark-submit ``--conf`` values win over these
DEFAULT_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",
    # an input file's task may run long on a big WARC; do not let speculation run it twice
    "spark.speculation": "false",
}


def get_session(app_name: str = "smelter", master: str | None = None, conf: dict[str, str] | None = None):
    """Get (or create) the SparkSession. Workers run this interpreter unless configured otherwise."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
