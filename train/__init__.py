"""The bundled Megatron-style trainer (not built yet)."""
