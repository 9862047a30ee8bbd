"""Readers: turn one input file (WARC, code, books ...) into Arrow record batches."""
