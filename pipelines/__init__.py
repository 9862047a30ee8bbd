"""Pipelines: the YAML schema, the planner, the Spark runner and the ``smelter`` command line."""
