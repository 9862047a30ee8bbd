"""The planner: a validated pipeline as Spark stages.

Each source is one Arrow pass: its reader and all its row steps run fused inside one ``mapInArrow``
task per input file, so a batch crosses the JVM/Python border once. Without global steps the same
pass writes the shards (no shuffle at all). Each global step is a shuffle over the union of sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.spec import PipelineSpec, source_columns


@dataclass
class Stage:
    kind: str  # "arrow-pass" | "shuffle"
    title: str
    operators: list[str]
    columns: list[str] = field(default_factory=list)
    note: str = ""


def plan(spec: PipelineSpec) -> list[Stage]:
    stages: list[Stage] = []
    writes_in_pass = not spec.steps
    for name, src in spec.sources.items():
        ops = [f"read:{src.read.name}", *[s.name for s in src.steps]]
        if writes_in_pass:
            ops.append("write")
        stages.append(Stage(
            kind="arrow-pass",
            title=f"source '{name}'",
            operators=ops,
            columns=source_columns(src.read, src.steps)[-1],
            note="one mapInArrow task per input file; no shuffle"
            + ("; writes shards/" + name + "/part-NNNNN.arrow (part = input file)" if writes_in_pass
               else "; stages its shard in _stage/shards/" + name + "/"),
        ))
    for i, step in enumerate(spec.steps):
        stages.append(Stage(kind="shuffle", title=f"global step {i}", operators=[step.name],
                            note="over the union of all sources (earlier removals left out); its removals "
                                 f"are written to _stage/removed/{i}-{step.name}/"))
    if spec.steps:
        stages.append(Stage(kind="arrow-pass", title="final write", operators=["filter", "write"],
                            note="removals regrouped by input file (one shuffle of ids); one task per input "
                                 "file writes shards/<source>/part-NNNNN.arrow and its ledger part"))
    return stages


def describe(spec: PipelineSpec) -> str:
    """The plan as text, for ``smelter plan``."""
    lines = [f"pipeline '{spec.name}'  config {spec.config_hash()}  output {spec.output_path()}"]
    for i, st in enumerate(plan(spec), 1):
        chain = " -> ".join(st.operators)
        kind = "fused Arrow pass" if st.kind == "arrow-pass" else "SHUFFLE"
        lines.append(f"stage {i}  {st.title}: {kind} [{chain}]")
        if st.note:
            lines.append(f"         {st.note}")
        if st.columns:
            lines.append(f"         columns out: {', '.join(st.columns)}")
    if not spec.steps:
        lines.append("no global steps: no shuffle; the driver only merges task records into the manifest")
    return "\n".join(lines)
