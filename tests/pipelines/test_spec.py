"""The YAML schema: what loads, and the one-line errors for what does not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from operators.extract import ExtractParams
from pipelines import spec as specmod
from pipelines.errors import UserError
from tests.conftest import ROOT

GOOD = textwrap.dedent("""\
    name: web-extract
    sources:
      web:
        read: {warc: {paths: "../shared/corpus/web/*.warc.gz"}}
        steps:
          - extract: {engine: trafilatura}
    steps: []
    output: {path: out/web-extract}
""")


def error_of(text: str, overrides=()) -> str:
    with pytest.raises(UserError) as e:
        specmod.load_text(text, "p.yaml", overrides)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_the_example_loads_with_typed_params():
    spec = specmod.load(ROOT / "pipelines/examples/extract.yaml")
    assert list(spec.sources) == ["web"]
    assert spec.sources["web"].read.name == "warc"
    step = spec.sources["web"].steps[0]
    assert step.name == "extract" and isinstance(step.params, ExtractParams)
    assert step.params.favor_precision is True and step.params.include_comments is False


def test_config_hash_is_stable_and_ignores_the_output_path():
    a = specmod.load_text(GOOD)
    b = specmod.load_text(GOOD.replace("out/web-extract", "elsewhere"))
    c = specmod.load_text(GOOD.replace("engine: trafilatura", "engine: resiliparse"))
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_unknown_step_names_line_key_and_near_miss():
    msg = error_of(GOOD.replace("- extract:", "- extrct:"))
    assert msg == "p.yaml:6: sources.web.steps[0]: unknown step 'extrct' (did you mean 'extract'?)"


def test_unknown_reader_and_parameter_keys():
    assert "unknown reader 'wark' (did you mean 'warc'?)" in error_of(GOOD.replace("warc:", "wark:"))
    msg = error_of(GOOD.replace("{engine: trafilatura}", "{engine: trafilatura, favour_precision: true}"))
    assert msg.startswith("p.yaml:6: sources.web.steps[0].extract.favour_precision: unknown key")
    assert "did you mean 'favor_precision'" in msg


def test_unknown_top_level_and_source_keys():
    assert error_of(GOOD + "outptu: {}\n").startswith("p.yaml:9: outptu: unknown key (did you mean 'output'?)")
    msg = error_of(GOOD.replace("    steps:\n      - extract", "    stepz:\n      - extract"))
    assert msg.startswith("p.yaml:5: sources.web.stepz: unknown key")


def test_bad_values_name_their_line():
    msg = error_of(GOOD.replace("engine: trafilatura", "engine: boilerpipe"))
    assert msg.startswith("p.yaml:6: sources.web.steps[0].extract.engine:")
    msg = error_of(GOOD.replace("{path: out/web-extract}", "{path: out/x, batch_rows: 0}"))
    assert msg.startswith("p.yaml:8: output.batch_rows:")


def test_malformed_yaml_is_one_line_with_its_line():
    msg = error_of("name: x\nsources:\n  web: {read: [unclosed\n")
    assert msg.startswith("p.yaml:") and "malformed YAML" in msg


def test_a_step_must_not_read_a_column_nobody_produced():
    text = GOOD.replace('warc: {paths: "../shared/corpus/web/*.warc.gz"}', "jsonl: {paths: x.jsonl}")
    msg = error_of(text)
    assert msg.startswith("p.yaml:6: sources.web.steps[0].extract: reads column 'html'")


def test_a_global_step_name_in_a_source_is_explained():
    msg = error_of(GOOD.replace("- extract: {engine: trafilatura}", "- warc: {paths: x}"))
    assert "'warc' is a reader, not a step" in msg


def test_set_overrides_any_value():
    spec = specmod.load_text(GOOD, overrides=["sources.web.read.warc.paths=data/*.warc.gz",
                                              "sources.web.steps.0.extract.timeout=2.5",
                                              "output.path=/tmp/o"])
    assert spec.sources["web"].read.params.paths == "data/*.warc.gz"
    assert spec.sources["web"].steps[0].params.timeout == 2.5
    assert spec.output_path() == "/tmp/o"
    assert error_of(GOOD, ["sources.web.steps.0.extract.timeout=-1"]).startswith(
        "--set sources.web.steps[0].extract.timeout:")
    assert "expected dotted.key=value" in error_of(GOOD, ["nonsense"])


def test_cli_validate_fails_in_one_line_with_exit_2_without_spark(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("- extract:", "- extrct:"))
    code = ("import sys; from pipelines.cli import main; rc = main(['validate', sys.argv[1]]);"
            "assert 'pyspark' not in sys.modules, 'validate must not start Spark'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"smelter: error: {bad}:6: sources.web.steps[0]: unknown step 'extrct' (did you mean 'extract'?)"]
    ok = tmp_path / "ok.yaml"
    ok.write_text(GOOD)
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "validate", str(ok)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_cli_plan_shows_the_fused_pass_and_no_shuffle():
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "plan", "pipelines/examples/extract.yaml"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "stage 1  source 'web': fused Arrow pass [read:warc -> extract -> write]" in r.stdout
    assert "no shuffle" in r.stdout
    assert "columns out: id, source, url, warc_date, warc_record_id, text" in r.stdout


def test_run_with_missing_input_fails_before_spark(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(GOOD.replace("../shared/corpus/web/*.warc.gz", str(tmp_path / "nothing/*.warc.gz")))
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(p)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"smelter: error: {p}: sources.web.read.warc.paths: no input file")
