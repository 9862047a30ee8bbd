"""Tokenizer stage: train or load tokenizers and write Megatron-compatible indexed datasets (not built yet)."""
