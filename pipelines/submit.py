"""The spark-submit entry point: ``spark-submit pipelines/submit.py PIPELINE [options]``.

``smelter run`` builds this call for you. Given to spark-submit directly, the master and any Spark
settings come from spark-submit's own flags (``--master spark://host:7077``, ``--conf k=v``).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # run as a script by spark-submit: make the project importable when it is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.cli import submit_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(submit_main(sys.argv[1:]))
