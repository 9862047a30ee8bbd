"""Global steps that remove duplicates across all sources: exact (a hash per document) and near
(MinHash LSH, connected components on Spark)."""
