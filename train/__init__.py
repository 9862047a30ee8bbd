"""The bundled Megatron-style trainer: a Llama-style model (``model``), parallelism applied from outside
(``parallel``: FSDP2, tensor and sequence parallel, activation checkpointing, compile), the batch stream
over a ``smelter mix`` training plan (``data``), AdamW and its schedules (``optim``), DCP checkpoints
(``checkpoint``), the pretraining loop (``pretrain``) and sampling (``sample``)."""
