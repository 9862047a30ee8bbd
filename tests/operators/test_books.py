"""``text_files``: the 40 real Gutenberg books lose header, footer and licence and keep their body;
encodings, splitting, ledger rows for files that give no document, and one real pipeline run."""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from operators.base import InputFile, TaskContext
from operators.readers.books import TextFilesParams, TextFilesReader, decode, split_text, strip_gutenberg
from tests.conftest import CORPUS

BOOKS = CORPUS / "books"
BOOK_FILES = sorted(BOOKS.glob("*.txt"))
SIDDHARTHA = BOOKS / "Hesse, Hermann -- Siddhartha.txt"
GARDEN = BOOKS / "Burnett, Frances Hodgson -- The Secret Garden.txt"
CORIOLANUS = BOOKS / "Shakespeare, William -- Coriolanus.txt"

# Licence and header text: none of it may survive stripping. Measured: none of these occurs in the body
# of any of the 40 books ("start of", "produced by", "licence" do, as prose; so does "etext" in the
# transcribers' errata lists at the end of a few books, which stay: they are part of the edition).
LICENCE = re.compile(r"gutenberg|\*\*\*|small print|pglaf|pgdp|<<this electronic|world library|"
                     r"\bebooks?\b|full license|for the use of anyone|refund|trademark|literary archive|"
                     r"(^|\n\n)(produced by|transcribed (from|by)|e-?text prepared|credits?\n)", re.IGNORECASE)
# "END OF" in capitals is body text in exactly these places (chapter ends, "FRIEND OF")
END_OF_IN_BODY = {
    "The History of Don Quixote": ["THE END OF THIS PROTRACTED ADVENTURE"],
    "The Bostonians": ["END OF VOL. I"],
    "The Whole Family": ["THE FRIEND OF THE FAMILY"],
    "Soldiers Three": ["THE END OF THE STORY OF THE GADSBYS"],
}


def read(path: Path | str, batch_size: int = 1000, name: str | None = None, **params):
    path = Path(path)
    reader = TextFilesReader(TextFilesParams(paths=str(path), **params))
    ctx = TaskContext(source="books", input=InputFile(0, str(path), name or path.name))
    batches = list(reader.read(ctx, batch_size))
    assert all(b.num_rows <= batch_size for b in batches)
    rows = pa.Table.from_batches(batches).to_pylist() if batches else []
    return rows, ctx


@pytest.fixture(scope="module")
def stripped() -> dict[str, tuple[dict, dict]]:
    """file name -> (the one row of the stripped book, the reader's counters)."""
    out = {}
    for path in BOOK_FILES:
        rows, ctx = read(path, strip="gutenberg")
        assert len(rows) == 1 and rows[0]["drop_reason"] is None, path.name
        out[path.name] = (rows[0], ctx.counters)
    return out


def _raw(path: Path) -> str:
    return path.read_text(encoding="utf-8").replace("\r\n", "\n")


def test_every_book_loses_header_footer_and_licence(stripped):
    assert len(stripped) == 40
    for name, (row, counters) in stripped.items():
        text = row["text"]
        assert counters["gutenberg_stripped"] == 1 and counters["encoding:utf-8"] == 1, name
        m = LICENCE.search(text)
        assert m is None, (name, text[max(0, m.start() - 80):m.end() + 80])
        allowed = next((v for k, v in END_OF_IN_BODY.items() if k in name), [])
        found = [text[m.start() - 40:m.end() + 40] for m in re.finditer("END OF", text)]
        assert len(found) == len(allowed) and all(a in f for a, f in zip(allowed, found, strict=True)), name
        assert text == text.strip("\n") and not text.endswith((" ", "\n")), name


def test_the_body_between_the_markers_is_kept_whole(stripped):
    """Independently of the reader's patterns: the text between the lines that carry the START and END
    markers is the body, less at most its first production-note paragraphs."""
    for path in BOOK_FILES:
        if path == CORIOLANUS:
            continue  # no modern markers: below
        raw = _raw(path)
        lines = raw.split("\n")
        # the START line, or the second line of a START marker wrapped over two
        start = max(i for i, line in enumerate(lines[:len(lines) // 2])
                    if "START OF TH" in line.upper() or line.rstrip().endswith("***"))
        end = min(i for i, line in enumerate(lines) if i > start and (
            "END OF TH" in line.upper() and "GUTENBERG" in line.upper()
            or line.startswith("End of") and "Gutenberg" in line))
        between = "\n".join(lines[start + 1:end]).strip()
        body = stripped[path.name][0]["text"]
        assert between.endswith(body[-3000:]), path.name
        assert body[:80] in between[:2000], path.name
        assert len(between) - 700 <= len(body) <= len(between), (path.name, len(between), len(body))


def test_known_beginnings_and_ends(stripped):
    def text(name: str) -> str:
        return stripped[name][0]["text"]

    sid = text(SIDDHARTHA.name)
    assert sid.startswith("SIDDHARTHA\n\nAn Indian Tale\n\nby Hermann Hesse")
    assert sid.endswith("what had ever been valuable and holy to\nhim in his life.")
    garden = text(GARDEN.name)
    assert garden.startswith("THE SECRET GARDEN\n\nby Frances Hodgson Burnett")
    assert garden.endswith("boy in Yorkshire—Master Colin!\n\nTHE END")
    # the START marker of this one wraps over two lines
    baum = text("Baum, L. Frank (Lyman Frank) -- The Surprising Adventures of the Magical Monarch of Mo and "
                "His People.txt")
    assert baum.startswith("THE SURPRISING ADVENTURES OF THE MAGICAL MONARCH OF MO AND HIS PEOPLE\n\nby\n\nL. FRANK")
    # production notes go, the book's own front matter stays
    jed = text("Alger, Horatio, Jr. -- Jed, the Poorhouse Boy.txt")
    assert jed.startswith("JED, THE POORHOUSE BOY") and "Copyright, 1899, by" in jed[:600]
    assert jed.endswith("1006-1016 Arch Street,      Philadelphia Pa.")
    orban = text("Orban, Paul -- All In The Mind.txt")
    assert orban.startswith("All in the Mind") and "[Sidenote: _When does life begin?" in orban[:500]


def test_old_world_library_shakespeare(stripped):
    """No START/END markers: the small print's closing line starts the body, "End of this Etext" ends it,
    and the copyright notice repeated between the acts goes."""
    raw = _raw(CORIOLANUS)
    assert raw.count("<<THIS ELECTRONIC VERSION") == 7 and "START OF" not in raw
    text = stripped[CORIOLANUS.name][0]["text"]
    assert text.startswith("1608\n\nTHE TRAGEDY OF CORIOLANUS\n\nby William Shakespeare\n\n\n\nDramatis Personae")
    assert text.endswith("[A dead march sounded]\n\n\nTHE END")
    assert "<<" not in text and "COPYRIGHT" not in text and "ACT I. SCENE I." in text
    assert "ACT V. SCENE I." in text and "SCENE VI." in text
    assert stripped[CORIOLANUS.name][0]["title"] == "Shakespeare, William -- Coriolanus"


def test_titles_from_the_header_else_the_file_name(stripped):
    assert stripped[SIDDHARTHA.name][0]["title"] == "Siddhartha"
    assert stripped["Baum, L. Frank (Lyman Frank) -- The Surprising Adventures of the Magical Monarch of Mo and "
                    "His People.txt"][0]["title"] == ("The Surprising Adventures of the Magical Monarch of Mo "
                                                      "and His People")
    assert all(row["title"] for row, _ in stripped.values())


def test_strip_none_keeps_everything_but_line_ends():
    rows, ctx = read(SIDDHARTHA)
    assert rows[0]["text"] == _raw(SIDDHARTHA)
    assert "gutenberg" not in ctx.counters and "\r" not in rows[0]["text"]


def test_old_small_print_header_and_a_book_without_markers(tmp_path):
    body = strip_gutenberg(_raw(SIDDHARTHA))[0]
    old = tmp_path / "old.txt"
    old.write_text("The Project Gutenberg Etext of Siddhartha\n\nTitle: Siddhartha, An Indian Tale\n\n"
                   "***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\nWhy is this \"Small Print!\" "
                   "statement here?\n\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n\n"
                   f"{body}\n\n\nEnd of Project Gutenberg Etext of Siddhartha\n\nThe licence follows.\n",
                   encoding="utf-8")
    rows, ctx = read(old, strip="gutenberg")
    assert rows[0]["text"] == body and rows[0]["title"] == "Siddhartha, An Indian Tale"
    assert ctx.counters["gutenberg_stripped"] == 1
    plain = tmp_path / "plain.txt"
    plain.write_text(body, encoding="utf-8")
    rows, ctx = read(plain, strip="gutenberg")
    assert rows[0]["text"] == body and rows[0]["title"] == "plain"
    assert ctx.counters["gutenberg_no_markers"] == 1 and "gutenberg_stripped" not in ctx.counters
    footer_only = tmp_path / "footer.txt"
    footer_only.write_text(body + "\n\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence\n", encoding="utf-8")
    rows, ctx = read(footer_only, strip="gutenberg")
    assert rows[0]["text"] == body and ctx.counters["gutenberg_no_start_marker"] == 1


def test_latin1_cp1252_boms_and_damaged_utf8(tmp_path):
    garden = strip_gutenberg(_raw(GARDEN))[0]  # curly quotes and dashes: cp1252 bytes 0x91-0x97
    (tmp_path / "cp1252.txt").write_bytes(garden.encode("cp1252").replace(b"\n", b"\r\n"))
    rows, ctx = read(tmp_path / "cp1252.txt")
    assert rows[0]["text"] == garden and ctx.counters["encoding:cp1252"] == 1
    # Latin-1 proper: accented letters (a C1 control byte would also decode, as Latin-1)
    mediaeval = strip_gutenberg(_raw(BOOKS / "Morley, Henry -- Mediaeval Tales.txt"))[0]
    latin = mediaeval.encode("latin-1", errors="ignore").decode("latin-1") + "\n\x81"
    assert "Æ" in latin and "é" in latin
    (tmp_path / "latin1.txt").write_bytes(latin.encode("latin-1"))
    rows, _ = read(tmp_path / "latin1.txt")
    assert rows[0]["text"] == latin
    rows, _ = read(tmp_path / "latin1.txt", encoding="latin-1")
    assert rows[0]["text"] == latin
    # byte-order marks: UTF-8's is dropped, UTF-16's decides the encoding
    (tmp_path / "bom8.txt").write_bytes(codecs.BOM_UTF8 + garden.encode("utf-8"))
    (tmp_path / "bom16.txt").write_bytes(garden.encode("utf-16"))
    for name in ("bom8.txt", "bom16.txt"):
        rows, _ = read(tmp_path / name)
        assert rows[0]["text"] == garden, name
    # UTF-8 with three damaged bytes stays UTF-8 (the damage becomes U+FFFD), not cp1252 mojibake
    raw = bytearray(garden.encode("utf-8"))
    for pos in (1000, 50_000, 200_000):
        while raw[pos] >= 0x80:  # damage an ASCII byte: one bad byte each
            pos += 1
        raw[pos] = 0xFF
    (tmp_path / "damaged.txt").write_bytes(bytes(raw))
    rows, ctx = read(tmp_path / "damaged.txt")
    assert ctx.counters["encoding:utf-8-damaged"] == 1 and ctx.counters["replaced_bytes"] == 3
    assert rows[0]["text"].count("\ufffd") == 3 and "“" in rows[0]["text"]
    assert decode(b"caf\xc3\xa9")[0] == "café" and decode(b"caf\xe9")[0] == "café"


def test_files_that_give_no_document_are_ledger_rows(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "header-only.txt").write_text("Title: Nothing\n\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n"
                                              "\n\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence\n")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02PK\x03\x04" * 100)
    (tmp_path / "utf8.txt").write_text("naïve café", encoding="utf-8")
    (tmp_path / "short.txt").write_text("Just a line.", encoding="utf-8")
    cases = [("empty.txt", {}, "empty"), ("header-only.txt", {"strip": "gutenberg"}, "empty"),
             ("binary.txt", {}, "binary"), ("utf8.txt", {"encoding": "ascii"}, "undecodable"),
             ("short.txt", {"min_chars": 100}, "too_short")]
    for name, params, reason in cases:
        rows, ctx = read(tmp_path / name, **params)
        assert len(rows) == 1 and rows[0]["drop_reason"] == reason, (name, rows)
        assert rows[0]["drop_detail"] and rows[0]["id"] and not ctx.errors
    rows, ctx = read(tmp_path / "missing.txt")
    assert rows == [] and "unreadable" in ctx.errors[0]["error"]
    with pytest.raises(ValueError, match="unknown text encoding"):
        TextFilesParams(paths="x", encoding="klingon")
    with pytest.raises(ValueError):
        TextFilesParams(paths="x", strip="yes")


def test_splitting_bounds_boundaries_and_stable_ids(stripped):
    limit = 4000
    cuts = paragraph_cuts = 0
    for path in BOOK_FILES:
        whole = stripped[path.name][0]["text"]
        rows, ctx = read(path, batch_size=50, strip="gutenberg", max_chars=limit)
        texts = [r["text"] for r in rows]
        assert [r["chunk"] for r in rows] == list(range(len(rows))) and len(rows) == ctx.counters["documents"]
        assert all(0 < len(t) <= limit for t in texts), path.name
        assert " ".join(texts).split() == whole.split(), path.name  # nothing lost, nothing added
        assert len(rows) >= len(whole) // limit
        pos = 0
        for t in texts[:-1]:  # where a piece ends in the whole text
            pos = whole.index(t, pos) + len(t)
            cuts += 1
            paragraph_cuts += bool(re.match(r"[ \t]*\n[ \t]*\n", whole[pos:pos + 20]))
        again, _ = read(path, batch_size=1000, strip="gutenberg", max_chars=limit)
        ids = [r["id"] for r in rows]
        assert ids == [r["id"] for r in again] and len(set(ids)) == len(ids)
        assert {r["title"] for r in rows} == {stripped[path.name][0]["title"]}
    assert paragraph_cuts / cuts > 0.95, (paragraph_cuts, cuts)  # measured: 3026 of 3084


def test_one_long_paragraph_splits_at_sentences_then_spaces():
    sid = strip_gutenberg(_raw(SIDDHARTHA))[0]
    line = " ".join(sid.split()[:3500])  # one paragraph on one line, about 20,000 characters
    pieces = split_text(line, 1000)
    assert all(len(p) <= 1000 for p in pieces) and " ".join(pieces) == line
    at_sentence_end = [bool(re.search(r"[.!?][\"')]*$", p)) for p in pieces[:-1]]
    assert sum(at_sentence_end) >= 0.9 * len(at_sentence_end)
    word = "x" * 2500
    assert split_text(word, 1000) == ["x" * 1000, "x" * 1000, "x" * 500]
    assert split_text("a" * 900 + " " + "b" * 900, 1000) == ["a" * 900, "b" * 900]


def test_ids_depend_on_source_file_and_chunk(tmp_path):
    rows, _ = read(SIDDHARTHA, strip="gutenberg", max_chars=20_000)
    moved = tmp_path / "elsewhere" / SIDDHARTHA.name
    moved.parent.mkdir()
    moved.write_bytes(SIDDHARTHA.read_bytes())
    again, _ = read(moved, strip="gutenberg", max_chars=20_000)
    assert [r["id"] for r in rows] == [r["id"] for r in again]  # same relative name, same ids
    renamed, _ = read(moved, strip="gutenberg", max_chars=20_000, name="other.txt")
    assert not {r["id"] for r in rows} & {r["id"] for r in renamed}


def test_pipeline_run_writes_clean_book_shards(spark, tmp_path):
    """One real run: 40 books and a broken file; no licence text in any shard, the ledger has the rest;
    a quality classifier (books against Python modules, trained here) scores every kept chunk."""
    from operators import quality
    from pipelines import runner
    from pipelines import spec as specmod

    chunks = [split_text(strip_gutenberg(_raw(p))[0], 4000)[:20] for p in BOOK_FILES[:6]]
    code = [p.read_text() for p in sorted((CORPUS / "code" / "python3.12").glob("*.py"))]
    trained = quality.train([c for book in chunks for c in book], code, dim=16,
                            positive_groups=[str(i) for i, book in enumerate(chunks) for _ in book])
    model = tmp_path / "quality.bin"
    trained.model.save_model(str(model))

    books = tmp_path / "books"
    books.mkdir()
    for path in BOOK_FILES:
        (books / path.name).write_bytes(path.read_bytes())
    (books / "zz-empty.txt").write_bytes(b"\n\n")
    pipeline = tmp_path / "books.yaml"
    pipeline.write_text(json.dumps({
        "name": "books",
        "sources": {"books": {"read": {"text_files": {"paths": str(books / "*.txt"), "strip": "gutenberg",
                                                      "max_chars": 50_000}},
                              "steps": [{"quality_classifier": {"model": str(model)}}]}},
        "output": {"path": str(tmp_path / "out")}}))
    spec = specmod.load(str(pipeline))
    out = tmp_path / "out"
    stats = runner.run(spec, str(out), spark=spark, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    tables = []
    for shard in manifest["shards"]:
        with pa.memory_map(str(out / shard["path"])) as f:
            tables.append(ipc.open_file(f).read_all())
    kept = pa.concat_tables([t for t in tables if t.num_rows])
    assert kept.schema.field("chunk").type == pa.int32()
    assert kept.schema.field("quality_score").type == pa.float32()
    scores = kept.column("quality_score").to_numpy()
    assert (scores > 0.5).mean() > 0.95  # books score high
    assert set(kept.column("title").to_pylist()) >= {"Siddhartha", "Shakespeare, William -- Coriolanus"}
    for text in kept.column("text").to_pylist():
        assert len(text) <= 50_000 and not LICENCE.search(text)
    ledger = []
    for part in manifest["ledger"]:
        with pa.memory_map(str(out / part["path"])) as f:
            ledger += ipc.open_file(f).read_all().to_pylist()
    assert [(r["step"], r["reason"]) for r in ledger] == [("text_files", "empty")]
    assert stats["rows_read"] == kept.num_rows + 1
    assert kept.num_rows == sum(len(split_text(strip_gutenberg(_raw(p))[0], 50_000)) for p in BOOK_FILES)
    # the empty file's shard has no rows but the same columns, chunk an int32 like the others
    assert [t.schema for t in tables if not t.num_rows] == [kept.schema]
