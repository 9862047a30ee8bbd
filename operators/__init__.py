"""Operators: every reader and step a YAML pipeline can name (see ``operators.registry``)."""
