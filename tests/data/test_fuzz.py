"""Bad input, fuzzed (hypothesis): malformed documents, truncated and mis-encoded files, fuzzed
sharder inputs and corrupted shard bytes. Every case must end in a clear error (the project's
:class:`UserError`, one line, naming the file / document and the field or position) or a
rejection record with its reason; never a hang, a traceback from deep inside, or a document that
is silently dropped.

Deterministic (``derandomize=True``, no example database): CI runs the same examples every time.
Each property runs inside its test (an inner ``@given`` function) so that the test can count
the examples and record them with ``fault_record``.
"""

from __future__ import annotations

import codecs
import copy
import json
import math
import os
import shutil
import tempfile
import threading
from pathlib import Path

import ijson
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsdocre.data import manifest as mf  # noqa: E402
from dsdocre.data.documents import Document  # noqa: E402
from dsdocre.data.reader import Rejection, iter_raw_documents, load_valid_documents  # noqa: E402
from dsdocre.data.validation import validate_document  # noqa: E402
from dsdocre.errors import UserError  # noqa: E402
from dsdocre.relations import relation_names  # noqa: E402

PROFILE = dict(deadline=None, derandomize=True, database=None, print_blob=False,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large, HealthCheck.filter_too_much])
RELATIONS = set(relation_names())
PAIRS_FORMAT = "dsdocre-pairs"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def within(seconds: float, fn, *args, **kwargs):
    """``fn(*args)`` in a thread: its result, or its exception re-raised here; still running after
    ``seconds`` is a hang, and a failure."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True, name=f"fuzz-{getattr(fn, '__name__', 'call')}")
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} still running after {seconds} s: a hang"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def outcome(seconds: float, fn, *args, **kwargs) -> tuple[str, object]:
    """``("ok", value)`` or ``("error", exception)``, with the hang check of :func:`within`."""
    try:
        return "ok", within(seconds, fn, *args, **kwargs)
    except AssertionError:
        raise
    except Exception as err:  # noqa: BLE001 - judged by assert_clear
        return "error", err


def assert_clear(err: BaseException, *names: str) -> str:
    """A clear error: a UserError (the CLI prints it as one line, no traceback), one readable
    line, naming every one of ``names`` (the file, the position, ...)."""
    assert isinstance(err, UserError), f"not a clear error: {type(err).__name__}: {err}"
    message = str(err)
    assert message and "\n" not in message and len(message) < 2000, repr(message[:3000])
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    return message


def json_bytes(docs: list, fmt: str, indent: int | None = None, ascii_only: bool = True) -> bytes:
    """``docs`` as a .json array or .jsonl file (UTF-8)."""
    if fmt == ".jsonl":
        return "".join(json.dumps(d, ensure_ascii=ascii_only) + "\n" for d in docs).encode("utf-8", "surrogatepass")
    return json.dumps(docs, indent=indent, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def same_json(a, b) -> bool:
    """Equal as JSON text (NaN == NaN here, unlike in Python)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def ijson_cannot_read(value) -> set[str]:
    """What of ``value``, written by Python's json, the .json reader cannot read back exactly. It
    streams arrays with ijson, whose C backend (yajl2_c) refuses integers beyond 64 bits ("number")
    and NaN / Infinity ("nan": not JSON; no ijson backend reads them), and refuses a lone low
    surrogate escape but reads a lone high one as '?' ("surrogate"; yajl's substitution). The
    .jsonl reader (json.loads) reads all three, so the fuzz tests expect exact reads there only."""
    found: set[str] = set()

    def walk(v) -> None:
        if isinstance(v, bool) or v is None:
            return
        if isinstance(v, int) and not -2**63 <= v < 2**63:
            found.add("number")
        elif isinstance(v, float) and not math.isfinite(v):
            found.add("nan")
        elif isinstance(v, str) and any("\ud800" <= c <= "\udfff" for c in v):
            found.add("surrogate")
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(value)
    return found


def base_documents() -> list[dict]:
    from dsdocre.synth import iter_documents

    docs = list(iter_documents("annotated", 3, 6))
    # Non-ASCII text: what a wrong encoding turns into something else (Latin-1 and CP1252 can hold it).
    docs[1]["title"] = "Zürich café: " + docs[1]["title"]
    docs[2]["sents"][0][0] = "Ångström"
    return docs


BASE = base_documents()


def broken(change, field: str) -> tuple[dict, str, str]:
    """A copy of the first document changed by ``change(doc)``: an explicit example (a regression)."""
    doc = copy.deepcopy(BASE[0])
    doc["title"] = "explicit"
    change(doc)
    return doc, "explicit", field


# Faults the random search found once, kept as explicit examples so that they are always run.
EXPLICIT = [
    broken(lambda d: d["labels"][0].update(r=["P17"]), "labels[0].r"),  # unhashable relation: TypeError
    broken(lambda d: d["sents"][0].__setitem__(0, "\ud800x"), "sents[0][0]"),  # tokenizer: TypeError
    broken(lambda d: d.update(title="\udfff"), "title"),
    broken(lambda d: d["vertexSet"][0][0].update(kb_id="Q\ud83d"), "vertexSet[0][0].kb_id"),  # fact join: encode
    broken(lambda d: (d.update(score=10**30), d["vertexSet"][0][0].update(sent_id=-10**30)),
           "vertexSet[0][0].sent_id"),  # a valid huge int elsewhere: .jsonl reads it; ijson refuses the .json file
    broken(lambda d: d["vertexSet"][0][0].update(pos=[float("nan"), 1]), "vertexSet[0][0].pos"),
]


# --------------------------------------------------------------------------------------------
# Strategies: JSON values, junk text, and mutations of a valid document
# --------------------------------------------------------------------------------------------
surrogate_text = st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), st.characters(categories=["Cs"]),
                           st.text(max_size=3))
valid_text = st.text(max_size=8) | st.sampled_from(["", " ", "\x00", "\u200b", "\ufeff", "🙂", "東京", "e\u0301",
                                                     "\n"])
json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-10**30, 10**30)
                | st.floats(allow_nan=True, allow_infinity=True) | valid_text | surrogate_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=10)
not_str = json_scalars.filter(lambda v: not isinstance(v, str)) | st.lists(json_scalars, max_size=2) \
    | st.dictionaries(st.text(max_size=4), json_scalars, max_size=2)
not_int = (json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
           | st.sampled_from([True, False, 0.0, 1.0, float("nan"), float("inf"), "0", [0], None]))
not_list = json_values.filter(lambda v: not isinstance(v, list))
not_dict = json_values.filter(lambda v: not isinstance(v, dict))
huge = st.integers(10**18, 10**30) | st.integers(-10**30, -1)


def _mentions(doc):
    return [(e, m) for e, ent in enumerate(doc["vertexSet"]) for m in range(len(ent))]


def targeted_mutation(draw, doc: dict) -> tuple[str, str]:
    """Break ``doc`` (in place) in one way the validator must catch: ``(kind, field it must name)``."""
    n_sents, n_ents = len(doc["sents"]), len(doc["vertexSet"])
    labels = doc.get("labels") or []
    kinds = ["missing top", "title type", "title surrogate", "sents", "sentence", "word type", "word surrogate",
             "vertexSet", "entity", "mention", "mention missing", "name", "type", "sent_id type",
             "sent_id range", "pos shape", "pos range", "kb_id surrogate", "labels"]
    if labels:
        kinds += ["label", "label missing", "h/t", "relation", "evidence", "self relation"]
    kind = draw(st.sampled_from(kinds))
    if kind == "missing top":
        key = draw(st.sampled_from(["title", "sents", "vertexSet"]))
        del doc[key]
        return kind, key
    if kind == "title type":
        doc["title"] = draw(not_str)
        return kind, "title"
    if kind == "title surrogate":
        doc["title"] = draw(surrogate_text)
        return kind, "title"
    if kind == "sents":
        doc["sents"] = draw(not_list | st.just([]))
        return kind, "sents"
    s = draw(st.integers(0, n_sents - 1))
    if kind == "sentence":
        doc["sents"][s] = draw(not_list | st.just([]))
        return kind, f"sents[{s}]"
    w = draw(st.integers(0, len(doc["sents"][s]) - 1))
    if kind in ("word type", "word surrogate"):
        doc["sents"][s][w] = draw(not_str if kind == "word type" else surrogate_text)
        return kind, f"sents[{s}][{w}]"
    if kind == "vertexSet":
        doc["vertexSet"] = draw(not_list | st.just([]))
        return kind, "vertexSet"
    e, m = draw(st.sampled_from(_mentions(doc)))
    path = f"vertexSet[{e}][{m}]"
    mention = doc["vertexSet"][e][m]
    if kind == "entity":
        doc["vertexSet"][e] = draw(not_list | st.just([]))
        return kind, f"vertexSet[{e}]"
    if kind == "mention":
        doc["vertexSet"][e][m] = draw(not_dict)
        return kind, path
    if kind == "mention missing":
        key = draw(st.sampled_from(["name", "pos", "sent_id", "type"]))
        del mention[key]
        return kind, f"{path}.{key}"
    if kind == "name":
        mention["name"] = draw(not_str | surrogate_text)
        return kind, f"{path}.name"
    if kind == "type":
        mention["type"] = draw(not_str | surrogate_text | st.just(""))
        return kind, f"{path}.type"
    if kind == "kb_id surrogate":
        mention["kb_id"] = draw(surrogate_text)
        return kind, f"{path}.kb_id"
    if kind == "sent_id type":
        mention["sent_id"] = draw(not_int)
        return kind, f"{path}.sent_id"
    if kind == "sent_id range":
        mention["sent_id"] = draw(st.integers(n_sents, n_sents + 3) | huge)
        return kind, f"{path}.sent_id"
    if kind == "pos shape":
        mention["pos"] = draw(not_list | st.lists(json_scalars, max_size=4).filter(
            lambda p: not (len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in p))))
        return kind, f"{path}.pos"
    if kind == "pos range":
        length = len(doc["sents"][mention["sent_id"]])
        start, end = draw(st.tuples(st.integers(-3, length + 3) | huge, st.integers(-3, length + 3) | huge).filter(
            lambda p: p[0] < 0 or p[1] <= p[0] or p[1] > length))
        mention["pos"] = [start, end]
        return kind, f"{path}.pos"
    if kind == "labels":
        doc["labels"] = draw(not_list)
        return kind, "labels"
    li = draw(st.integers(0, len(labels) - 1))
    lab = labels[li]
    if kind == "label":
        labels[li] = draw(not_dict)
        return kind, f"labels[{li}]"
    if kind == "label missing":
        key = draw(st.sampled_from(["h", "t", "r"]))
        del lab[key]
        return kind, f"labels[{li}].{key}"
    if kind == "h/t":
        key = draw(st.sampled_from(["h", "t"]))
        lab[key] = draw(not_int | st.integers(n_ents, n_ents + 3) | huge)
        return kind, f"labels[{li}].{key}"
    if kind == "relation":
        lab["r"] = draw(not_str | st.text(max_size=6).filter(lambda r: r not in RELATIONS) | surrogate_text)
        return kind, f"labels[{li}].r"
    if kind == "evidence":
        lab["evidence"] = draw(not_list
                               | st.lists(not_int, min_size=1, max_size=3)
                               | st.lists(st.integers(n_sents, n_sents + 3) | huge, min_size=1, max_size=3))
        return kind, f"labels[{li}].evidence"
    assert kind == "self relation"
    lab["t"] = lab["h"]
    return kind, f"labels[{li}]"


def benign_mutation(draw, doc: dict) -> None:
    """Changes a valid document may carry: unknown fields, any Unicode text in words and titles, a
    duplicated label (a warning: DocRED's scorer counts it once)."""
    kind = draw(st.sampled_from(["extra field", "mention extra", "word", "title"]
                                + (["duplicate label"] if doc.get("labels") else [])))
    if kind == "extra field":
        doc[draw(st.text(max_size=6).filter(lambda k: k not in ("title", "sents", "vertexSet", "labels")))] = \
            draw(json_values)
    elif kind == "mention extra":
        e, m = draw(st.sampled_from(_mentions(doc)))
        doc["vertexSet"][e][m][draw(st.sampled_from(["global_pos", "x", "中"]))] = draw(json_values)
    elif kind == "duplicate label":
        doc["labels"].append(copy.deepcopy(draw(st.sampled_from(doc["labels"]))))
    elif kind == "word":
        s = draw(st.integers(0, len(doc["sents"]) - 1))
        doc["sents"][s][draw(st.integers(0, len(doc["sents"][s]) - 1))] = draw(valid_text)
    else:
        doc["title"] = draw(valid_text) + doc["title"]


@st.composite
def mutated_document(draw) -> tuple[dict, str, str]:
    """A copy of a valid document with 0-2 benign changes and one targeted break."""
    doc = copy.deepcopy(draw(st.sampled_from(BASE)))
    for _ in range(draw(st.integers(0, 2))):
        benign_mutation(draw, doc)
    kind, field = targeted_mutation(draw, doc)
    return doc, kind, field


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@st.composite
def chaos_document(draw):
    """A valid document with any one of its values (or the whole of it) replaced by arbitrary JSON."""
    doc = copy.deepcopy(draw(st.sampled_from(BASE)))
    path = draw(st.sampled_from(list(_paths(doc))))
    value = draw(json_values)
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def problems_are_precise(problems, index: int, source: str, raw) -> None:
    title = raw.get("title") if isinstance(raw, dict) and isinstance(raw.get("title"), str) else None
    for p in problems:
        assert (p.source, p.index, p.title) == (source, index, title)
        assert p.field and p.message and p.severity in ("error", "warning")
        text = str(p)
        assert text.startswith(f"{source}: document {index} ") and "\n" not in text and len(text) < 1000, text
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        json.dumps(Rejection.of(errors).to_json())  # the rejection record can be written


@pytest.fixture(scope="module")
def tokenizer(encoder_dir):
    from dsdocre.data.encoding import load_tokenizer

    return load_tokenizer(encoder_dir)[0]


# --------------------------------------------------------------------------------------------
# 1. The validator and the document loader
# --------------------------------------------------------------------------------------------
def test_mutated_documents_are_rejected_naming_document_and_field(fault_record, tmp_path):
    """Each targeted break (a field missing, of the wrong type, out of range, ...) is reported as
    an error naming the document and exactly that field; in a file, the broken document is
    rejected at its index and every other document is kept."""
    examples = 0

    @settings(max_examples=150, **PROFILE)
    @given(mutated_document(), st.integers(0, 2), st.sampled_from([".json", ".jsonl"]))
    @example(EXPLICIT[0], 0, ".json")
    @example(EXPLICIT[1], 1, ".jsonl")
    @example(EXPLICIT[2], 2, ".json")
    @example(EXPLICIT[3], 0, ".jsonl")
    @example(EXPLICIT[4], 1, ".json")
    @example(EXPLICIT[4], 1, ".jsonl")
    @example(EXPLICIT[5], 2, ".jsonl")
    @example(EXPLICIT[5], 2, ".json")  # NaN: not JSON, the .json file refused
    @example(EXPLICIT[1], 1, ".json")  # a lone high surrogate: read as '?' from .json (yajl)
    def prop(case, position, fmt):
        nonlocal examples
        examples += 1
        doc, kind, field = case
        problems = validate_document(doc, index=7, source="fuzz.json")
        problems_are_precise(problems, 7, "fuzz.json", doc)
        errors = [p for p in problems if p.severity == "error"]
        assert any(p.field == field for p in errors), (kind, field, [str(p) for p in problems])

        good = [d for d in BASE if d["title"] != doc.get("title")][:2]
        docs = good[:position] + [doc] + good[position:]
        path = tmp_path / f"in{fmt}"
        path.write_bytes(json_bytes(docs, fmt))
        issues = ijson_cannot_read(doc) if fmt == ".json" else set()
        if issues:  # what ijson cannot read (see ijson_cannot_read): never a crash nor a document lost
            status, result = outcome(30, load_valid_documents, path, log=None)
            if status == "error":  # the whole file refused, naming it
                message = assert_clear(result, str(path))
                assert issues != {"number"} or "a number too large" in message, message
                assert issues != {"nan"} or "NaN" in message, message
                return
            assert issues & {"surrogate"} or ijson.backend != "yajl2_c", (issues, ijson.backend)
            kept, rejected = result  # a lone high surrogate read as '?': the document may be valid now
            assert len(kept) + len(rejected) == len(docs) and {r.index for r in rejected} <= {position}
            titles = [d.title for d in kept]
            assert (titles if rejected else titles[:position] + titles[position + 1:]) == [d["title"] for d in good]
            return
        kept, rejected = within(30, load_valid_documents, path, log=None)
        assert [d.title for d in kept] == [d["title"] for d in good]
        assert [(r.index, r.source) for r in rejected] == [(position, str(path))]
        assert any(p.field == field for p in rejected[0].problems)

    prop()
    fault_record(fault="fuzzed input documents",
                 how="a valid DocRED document broken in one way each (missing field, wrong type, out-of-range "
                     "span / sentence id / entity id / evidence, empty vertexSet, non-list sents, huge ints, NaN, "
                     "lone surrogates), plus benign unicode junk and unknown fields; validate_document and "
                     "load_valid_documents (.json and .jsonl)",
                 times=examples, outcome="every broken document rejected with an error naming its index, title "
                                         "and the broken field; the other documents of the file kept (a .json file "
                                         "with what ijson cannot read, integers beyond 64 bits, NaN, lone "
                                         "surrogates: refused whole with a UserError naming it, or a lone high "
                                         "surrogate read as '?' with no document lost)", lost=0)


def test_arbitrary_json_in_a_document_never_crashes_the_validator(fault_record, tokenizer):
    """Any value anywhere in a document: the validator returns problems (never raises), and a
    document it accepts can be typed, written back unchanged and tokenized."""
    examples = 0

    @settings(max_examples=200, **PROFILE)
    @given(chaos_document())
    @example(EXPLICIT[0][0])
    @example(EXPLICIT[1][0])
    def prop(raw):
        nonlocal examples
        examples += 1
        problems = validate_document(raw, index=3, source="chaos.jsonl")
        problems_are_precise(problems, 3, "chaos.jsonl", raw)
        if not any(p.severity == "error" for p in problems):
            doc = Document.from_json(raw)
            assert same_json(doc.to_json(), raw)
            encoded = tokenizer.encode(doc)
            assert encoded.num_entities == len(raw["vertexSet"])

    prop()
    fault_record(fault="fuzzed input documents",
                 how="any value of a valid document (or the whole document) replaced by arbitrary JSON "
                     "(nested lists/objects, NaN, infinities, huge ints, lone surrogates, unicode junk); "
                     "validate_document, then Document and the marker tokenizer on what it accepts",
                 times=examples, outcome="every case a list of precise problems or a usable document; "
                                         "no exception", lost=0)


# --------------------------------------------------------------------------------------------
# 2. Whole files: truncated, mis-encoded, not an array
# --------------------------------------------------------------------------------------------
def read_all(path, block: int | None = None) -> tuple[list, BaseException | None]:
    """Every document the streaming reader yields, and the error that stopped it (or None);
    ``block``: the reader's read size (small ones cut documents and characters between reads)."""
    from dsdocre.data import reader

    out: list = []
    default = reader._BLOCK_BYTES
    reader._BLOCK_BYTES = block or default
    try:
        for doc in iter_raw_documents(path):
            out.append(doc)
    except Exception as err:  # noqa: BLE001 - judged by the caller
        return out, err
    finally:
        reader._BLOCK_BYTES = default
    return out, None


def document_ends(docs: list, fmt: str, indent, ascii_only: bool) -> tuple[bytes, list[int]]:
    """The file's bytes and the byte offset at which each document ends."""
    data = json_bytes(docs, fmt, indent, ascii_only)
    ends, start = [], 0
    for d in docs:
        piece = json.dumps(d, indent=indent if fmt == ".json" else None, ensure_ascii=ascii_only)
        if fmt == ".json" and indent is not None:  # nested one level inside the array
            piece = piece.replace("\n", "\n" + " " * indent)
        piece_bytes = piece.encode("utf-8")
        at = data.index(piece_bytes, start)
        start = at + len(piece_bytes)
        ends.append(start)
    return data, ends


def test_truncated_files_keep_the_documents_before_the_cut_and_name_the_position(fault_record, tmp_path):
    """A file cut at any byte: the reader yields exactly the complete documents before the cut,
    then (unless the cut fell between JSON Lines) stops with a UserError naming the file and the
    position; the loader refuses the file with that error, or keeps every complete document."""
    examples = 0

    @settings(max_examples=60, **PROFILE)
    @given(st.lists(st.sampled_from(range(len(BASE))), min_size=1, max_size=4, unique=True),
           st.sampled_from([".json", ".jsonl"]), st.sampled_from([None, 1]), st.booleans(),
           st.sampled_from([None, 1, 2, 7, 100]), st.data())
    def prop(which, fmt, indent, ascii_only, block, data):
        nonlocal examples
        examples += 1
        docs = [BASE[i] for i in which]
        full, ends = document_ends(docs, fmt, indent, ascii_only)
        cut = data.draw(st.integers(0, len(full) - 1), label="cut")
        path = tmp_path / f"cut{fmt}"
        path.write_bytes(full[:cut])
        complete = sum(end <= cut for end in ends)
        got, err = within(30, read_all, path, block)
        assert got == docs[:len(got)], "a damaged document was yielded"
        assert len(got) == complete, "a complete document before the cut was not yielded"
        if err is None:
            assert fmt == ".jsonl" and len(got) == complete  # a cut between lines looks like a shorter file
        elif fmt == ".jsonl":
            assert_clear(err, f"{path}:{len(got) + 1}:")
        elif cut > 0 and full[:cut].strip():
            message = assert_clear(err, str(path), f"after {len(got)} complete document")
            assert message == str(read_all(path)[1]), "the error depends on the read size"
        else:
            assert_clear(err, str(path), "holds nothing")
        status, result = outcome(30, load_valid_documents, path, log=None)
        if status == "error":
            assert_clear(result, str(path))
            assert err is not None or complete == 0
        else:
            kept, rejected = result
            assert err is None and [d.title for d in kept] == [d["title"] for d in docs[:complete]] and not rejected

    prop()
    fault_record(fault="truncated or mis-encoded file",
                 how=".json arrays (compact / indented, ASCII / UTF-8) and .jsonl files of valid documents cut at "
                     "a random byte; iter_raw_documents and load_valid_documents",
                 times=examples, outcome="every case: exactly the complete documents before the cut, then a "
                                         "UserError naming the file and the line / character and documents read "
                                         "(a cut between JSON Lines reads as a shorter file)", lost=0)


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252"]
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80"]


def reference_parse(data: bytes, fmt: str) -> list | None:
    """What a strict UTF-8 JSON reader makes of ``data`` (None: not UTF-8 text, or NUL bytes)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    if fmt == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def test_wrong_encodings_are_refused_naming_the_file(fault_record, tmp_path):
    """UTF-8 (with or without a byte-order mark) is read exactly; UTF-16/32, Latin-1, CP1252 text
    and invalid UTF-8 bytes at a random place are refused with a UserError naming the file, the
    position and UTF-8; documents read before the damage are exact. Whatever the read size (a
    character split between reads is not an error), the same error, byte offset included."""
    examples = 0

    @settings(max_examples=60, **PROFILE)
    @given(st.lists(st.sampled_from(range(len(BASE))), min_size=1, max_size=3, unique=True),
           st.sampled_from([".json", ".jsonl"]), st.sampled_from(ENCODINGS + ["invalid utf-8"] * 3),
           st.sampled_from([None, 1, 3, 50]), st.data())
    def prop(which, fmt, encoding, block, data):
        nonlocal examples
        examples += 1
        docs = [BASE[i] for i in which]
        text = json_bytes(docs, fmt, ascii_only=False).decode("utf-8")
        if encoding == "invalid utf-8":
            raw = text.encode("utf-8")
            at = data.draw(st.integers(0, len(raw)), label="at")
            raw = raw[:at] + data.draw(st.sampled_from(BAD_UTF8), label="bytes") + raw[at:]
        else:
            raw = text.encode(encoding)
        path = tmp_path / f"enc{fmt}"
        path.write_bytes(raw)
        got, err = within(30, read_all, path, block)
        whole_got, whole_err = read_all(path)  # the default read size: this file in one read
        assert str(err) == str(whole_err) and (err or got == whole_got), "depends on the read size"
        expected = reference_parse(raw, fmt) if encoding != "invalid utf-8" else None
        if expected is not None:
            assert err is None and got == expected  # UTF-8, a BOM, or text that is the same in UTF-8
        else:
            assert err is not None and got == docs[:len(got)]
            message = assert_clear(err, str(path), "UTF")
            assert any(w in message for w in ("byte", f":{len(got) + 1}:", "byte-order mark")), message
            with pytest.raises(UserError, match="UTF"):
                within(30, load_valid_documents, path, log=None)

    prop()
    fault_record(fault="truncated or mis-encoded file",
                 how=".json / .jsonl files written as UTF-8, UTF-8 with BOM, UTF-16 (BOM, LE, BE), UTF-32, "
                     "Latin-1, CP1252, or UTF-8 with invalid bytes inserted at a random offset; "
                     "iter_raw_documents and load_valid_documents",
                 times=examples, outcome="UTF-8 read exactly; every other case a UserError naming the file, "
                                         "the byte / line and the encoding", lost=0)


# Not fuzzed: a .json array nested thousands of levels deep. ijson's time and memory grow with the
# square of the depth (yajl2_c, ijson 3.6: 5,000 levels 73 MB / 0.1 s, 50,000 levels 6 GB / 17 s),
# a known ijson property; the .jsonl reader refuses deep nesting ("nested too deeply").
def _array_lines(docs) -> bytes:
    return json.dumps(docs, indent=1).encode()


FILE_SHAPES = {
    # shape -> (.suffix, bytes from (documents, a JSON value that is not an array), words of the error)
    "scalar or object in .json": (".json", lambda d, v: json.dumps(v).encode(), "not an array of documents"),
    "JSON Lines in .json": (".json", lambda d, v: "\n".join(json.dumps(x) for x in d).encode(),
                            "not an array of documents"),
    "two arrays in .json": (".json", lambda d, v: (json.dumps(d) + json.dumps(d)).encode(), "after the closing"),
    "trailing comma": (".json", lambda d, v: json.dumps(d).encode()[:-1] + b",]", "trailing comma"),
    "missing comma": (".json", lambda d, v: b"[" + b" ".join(json.dumps(x).encode() for x in d) + b"]",
                      "expected ','"),
    "whitespace only": (".json", lambda d, v: b" \n\t ", "holds nothing"),
    "array on one line of .jsonl": (".jsonl", lambda d, v: json.dumps(d).encode() + b"\n", ":1: a JSON array"),
    "indented array in .jsonl": (".jsonl", lambda d, v: _array_lines(d), ":1: not valid JSON"),
    "empty array": (".json", lambda d, v: b"[]", "holds no documents"),
    "empty .jsonl": (".jsonl", lambda d, v: b"\n\n", "holds no documents"),
}


def test_files_that_are_not_arrays_of_documents_are_refused_clearly(fault_record, tmp_path):
    """A JSON value that is not an array, JSON Lines in a .json file and an array in a .jsonl
    file, two arrays back to back, syntax slips, empty files: a UserError naming the file and
    what is wrong. An array of non-objects is read, and every element rejected."""
    examples = 0

    @settings(max_examples=40, **PROFILE)
    @given(st.sampled_from(sorted(FILE_SHAPES) + ["array of non-objects"]),
           st.lists(st.sampled_from(range(len(BASE))), min_size=2, max_size=3, unique=True),
           json_values.filter(lambda v: not isinstance(v, list)),
           st.lists(not_dict, min_size=1, max_size=4))
    def prop(shape, which, value, elements):
        nonlocal examples
        examples += 1
        docs = [BASE[i] for i in which]
        if shape == "array of non-objects":
            path = tmp_path / "elements.json"
            path.write_bytes(json.dumps(elements).encode())
            status, result = outcome(30, load_valid_documents, path, log=None)
            if status == "error":  # only for what ijson cannot read (see ijson_cannot_read)
                assert ijson_cannot_read(elements), f"{type(result).__name__}: {result}"
                assert_clear(result, str(path))
                return
            kept, rejected = result
            assert not kept and [r.index for r in rejected] == list(range(len(elements)))
            assert all("expected a JSON object" in r.problems[0].message for r in rejected)
            return
        suffix, make, words = FILE_SHAPES[shape]
        path = tmp_path / f"shape{suffix}"
        path.write_bytes(make(docs, value))
        with pytest.raises(UserError) as err:
            within(30, load_valid_documents, path, log=None)
        assert_clear(err.value, str(path), words)

    prop()
    fault_record(fault="truncated or mis-encoded file",
                 how="files that are not an array of documents: a scalar or object, JSON Lines in .json, an "
                     "array in .jsonl, two arrays back to back, a trailing or missing comma, empty files, an "
                     "array of non-objects; load_valid_documents",
                 times=examples, outcome="every case a UserError naming the file and what it holds, or (an "
                                         "array of non-objects) every element rejected with its index", lost=0)


# --------------------------------------------------------------------------------------------
# 3. The sharder end to end (in-process: workers=0)
# --------------------------------------------------------------------------------------------
@st.composite
def sharder_input(draw) -> tuple[str, list]:
    """A file format and its entries: ("doc", a document or any JSON value) or ("line", raw bytes
    of a .jsonl line that is not JSON)."""
    fmt = draw(st.sampled_from([".json", ".jsonl"]))
    entries = []
    for _ in range(draw(st.integers(1, 6))):
        kinds = ["good", "good", "mutated", "chaos"] + (["broken line"] if fmt == ".jsonl" else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "good":
            entries.append(("doc", copy.deepcopy(draw(st.sampled_from(BASE)))))
        elif kind == "mutated":
            entries.append(("doc", draw(mutated_document())[0]))
        elif kind == "chaos":
            entries.append(("doc", draw(chaos_document())))
        else:
            whole = json.dumps(draw(st.sampled_from(BASE))).encode()
            entries.append(("line", draw(st.sampled_from([whole[:len(whole) // 2], b"{", b"not json", b"\xff\xfe{}",
                                                          b'{"title": "x",}']))))
    return fmt, entries


def _duplicated_label(title: str, broken: bool = False) -> dict:
    """BASE[0] with its first label twice (a warning only), and with no sentences (an error) if ``broken``."""
    doc = copy.deepcopy(BASE[0])
    doc["title"] = title
    doc["labels"].append(copy.deepcopy(doc["labels"][0]))
    if broken:
        doc["sents"] = []
    return doc


_DUPLICATED_LABEL = _duplicated_label("duplicated label")
_DUPLICATED_LABEL_AND_BROKEN = _duplicated_label("duplicated label, no sentences", broken=True)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _write_entries(path: Path, fmt: str, entries: list, indent) -> None:
    if fmt == ".jsonl":
        path.write_bytes(b"".join((json.dumps(v).encode() if k == "doc" else v) + b"\n" for k, v in entries))
    else:
        path.write_bytes(json.dumps([v for _, v in entries], indent=indent).encode())


def test_sharder_accounts_for_every_fuzzed_document(fault_record, tmp_path):
    """Fuzzed inputs (valid, broken and arbitrary documents, lines that are not JSON) through
    ``shard_corpus``: input = sharded + rejected, every document is an identical sample or a
    rejection record with its reasons, as the validator decides: a document with an error is
    rejected with every error among its reasons; one without problems, or with only warnings (a
    duplicated label), is sharded, as load_valid_documents keeps it."""
    from sharding.shard import iter_samples, sample_key, shard_corpus

    examples = 0

    @settings(max_examples=60, **PROFILE)
    @given(st.lists(sharder_input(), min_size=1, max_size=2), st.integers(1, 4), st.sampled_from([None, 1]))
    @example([(".json", [("doc", BASE[1])] + [("doc", doc) for doc, _, _ in EXPLICIT])], 2, None)
    @example([(".jsonl", [("doc", doc) for doc, _, _ in EXPLICIT[:3]] + [("line", b"{")]),
              (".json", [("doc", BASE[2]), ("doc", 42)])], 1, 1)
    @example([(".json", [("doc", BASE[0]), ("doc", _DUPLICATED_LABEL), ("doc", _DUPLICATED_LABEL_AND_BROKEN)]),
              (".jsonl", [("line", b"\xff\xfe{}"), ("doc", _DUPLICATED_LABEL)])], 2, None)
    def prop(files, per_shard, indent):
        nonlocal examples
        examples += 1
        with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
            root = Path(tmp)
            paths = []
            for f, (fmt, entries) in enumerate(files):
                paths.append(root / f"in{f}{fmt}")
                _write_entries(paths[-1], fmt, entries, indent)
            summary = within(120, shard_corpus, paths, root / "out", docs_per_shard=per_shard, workers=0,
                             progress=False, log=None)
            n_input = sum(len(entries) for _, entries in files)
            counts = summary.counts
            assert counts["input"] == n_input and counts["sharded"] + counts["rejected"] == n_input
            samples = {key: doc for key, doc, _ in within(60, lambda: list(iter_samples(root / "out")))}
            rejected = {r["key"]: r for r in map(json.loads, (root / "out" / mf.REJECTED).read_text().splitlines())}
            assert len(samples) == counts["sharded"] and len(rejected) == counts["rejected"]
            for f, (fmt, entries) in enumerate(files):
                for i, (kind, value) in enumerate(entries):
                    key = sample_key(f, i)
                    assert (key in samples) != (key in rejected), f"{key}: lost or twice"
                    if key in rejected:
                        r = rejected[key]
                        assert r["reasons"] and all(isinstance(x, str) and x for x in r["reasons"]), r
                        assert (r["source"], r["index"]) == (str(paths[f].resolve()), i)
                    if kind == "line":  # not JSON, or (b"\xff\xfe{}") not UTF-8 either
                        words = "not valid JSON" if _is_utf8(value) else "not UTF-8 text"
                        assert key in rejected and words in rejected[key]["reasons"][0], rejected.get(key)
                        continue
                    problems = validate_document(value)
                    errors = {f"{p.field}: {p.message}" for p in problems if p.severity == "error"}
                    if errors:
                        assert key in rejected and errors <= set(rejected[key]["reasons"]), (key, errors)
                    else:  # no problems, or only warnings (a duplicated label): sharded, as the loader keeps it
                        assert key in samples and same_json(samples[key], value), key

    prop()
    fault_record(fault="fuzzed input documents",
                 how="1-2 .json/.jsonl inputs of valid, broken (one targeted fault), arbitrary-JSON documents and "
                     "non-JSON lines, 1-4 documents per shard; shard_corpus(workers=0), iter_samples, rejected.jsonl",
                 times=examples, outcome="input = sharded + rejected every time; each document an identical "
                                         "sample or a rejection record with its reasons, as the validator decides",
                 lost=0)


_GOOD = json.dumps(BASE[1], ensure_ascii=False)  # non-ASCII text ("Zürich café"): Latin-1 differs from UTF-8
_LINE = (_GOOD + "\n").encode()  # a good .jsonl line
_BAD_BYTE_AT = len(("[" + _GOOD + ", ").encode()) + 1  # the invalid byte of "invalid utf-8 in .json" below
_LATIN_1_AT = next(i for i, c in enumerate(_GOOD) if ord(c) > 127)  # "ü" (0xFC in Latin-1): not UTF-8

# Input the sharder refuses as a whole: a UserError naming the file (``dsdocre shard`` prints it as
# one line and exits 1). case -> (suffix, bytes, words of the error)
SHARDER_REFUSES = {
    "latin-1 .json": (".json", ("[" + _GOOD + "]").encode("latin-1"),
                      [f"not UTF-8 text (invalid start byte at byte {1 + _LATIN_1_AT})", "iconv"]),
    "invalid utf-8 in .json": (".json", ("[" + _GOOD + ", ").encode() + b'"\xff"]',
                               [f"not UTF-8 text (invalid start byte at byte {_BAD_BYTE_AT})"]),
    "utf-16 .json": (".json", ("[" + _GOOD + "]").encode("utf-16"), ["UTF-16 text", "byte-order mark"]),
    "utf-32 .json": (".json", ("[" + _GOOD + "]").encode("utf-32"), ["UTF-32 text", "byte-order mark"]),
    "utf-16 .json without BOM": (".json", ("[" + _GOOD + "]").encode("utf-16-le"), ["NUL byte", "not UTF-8 text"]),
    "5000-digit int in .json": (".json", b'[{"title": ' + b"9" * 5000 + b"}]",
                                ["not a JSON array of documents", "integer string conversion", "near character 1"]),
    "deep nesting in .json": (".json", b"[" + b"[" * 50000 + b"]" * 50000 + b"]",
                              ["not a JSON array of documents: nested too deeply", "near character 1"]),
}

# Input the sharder reads, rejecting what cannot be read; the other documents are sharded.
# case -> (suffix, bytes, (input, sharded, rejected), words of each rejection's reason, in order)
SHARDER_REJECTS = {
    "5000-digit int in .jsonl": (".jsonl", b'{"title": ' + b"9" * 5000 + b"}\n" + _LINE, (2, 1, 1),
                                 ["<document>: not valid JSON: Exceeds the limit (4300 digits)"]),
    "deep nesting in .jsonl": (".jsonl", b"[" * 50000 + b"]" * 50000 + b"\n" + _LINE, (2, 1, 1),
                               ["<document>: not valid JSON: nested too deeply"]),
    "latin-1 line in .jsonl": (".jsonl", _LINE + (_GOOD + "\n").encode("latin-1") + _LINE, (3, 2, 1),
                               [f"<document>: not UTF-8 text (invalid start byte at byte {_LATIN_1_AT} of the line)"]),
    # UTF-16 split at its b"\n": the text (not UTF-8), then the newline's second byte (a NUL: not JSON)
    "utf-16 .jsonl": (".jsonl", (_GOOD + "\n").encode("utf-16"), (2, 0, 2),
                      ["<document>: not UTF-8 text (invalid start byte at byte 0 of the line)",
                       "<document>: not valid JSON"]),
    "utf-8 BOM .json": (".json", codecs.BOM_UTF8 + ("[" + _GOOD + "]").encode(), (1, 1, 0), []),
    "utf-8 BOM .jsonl": (".jsonl", codecs.BOM_UTF8 + _LINE + _LINE, (2, 2, 0), []),
}


@pytest.mark.parametrize("case", sorted(SHARDER_REFUSES))
def test_sharder_refuses_unreadable_files_naming_the_file(case, tmp_path, fault_record):
    """A .json array that is not UTF-8 (Latin-1, invalid bytes, UTF-16/32 with or without a
    byte-order mark) or holds what Python's json cannot read (an integer of more than 4,300 digits,
    nesting beyond the recursion limit): a UserError naming the file and what is wrong, in the
    library reader's words for the encoding; never a bare UnicodeDecodeError / RecursionError."""
    from sharding.shard import shard_corpus

    suffix, data, words = SHARDER_REFUSES[case]
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    status, result = outcome(120, shard_corpus, [path], tmp_path / "out", docs_per_shard=2, workers=0,
                             progress=False, log=None)
    assert status == "error", f"read: {result.counts}"
    assert_clear(result, str(path), *words)
    assert not (tmp_path / "out" / mf.MANIFEST).exists()
    fault_record(fault="truncated or mis-encoded file", how=f"{case}; shard_corpus(workers=0)", times=1,
                 outcome="a UserError naming the file and what is wrong", lost=0)


@pytest.mark.parametrize("case", sorted(SHARDER_REJECTS))
def test_sharder_rejects_unreadable_lines_and_shards_the_rest(case, tmp_path, fault_record):
    """A .jsonl line that is not UTF-8 (decoded as UTF-8, never guessed as UTF-16), or that json
    cannot read (a 5,000-digit integer, deep nesting): a rejection record with the reason, and the
    job goes on with the other lines. A UTF-8 byte-order mark is no part of the first document:
    its sample holds the document's bytes without it."""
    import webdataset as wds

    from sharding.shard import shard_corpus

    suffix, data, (n_input, n_sharded, n_rejected), reasons = SHARDER_REJECTS[case]
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    out = tmp_path / "out"
    summary = within(120, shard_corpus, [path], out, docs_per_shard=2, workers=0, progress=False, log=None)
    assert summary.counts == {"input": n_input, "sharded": n_sharded, "rejected": n_rejected}
    rejected = [json.loads(x) for x in (out / mf.REJECTED).read_text().splitlines()]
    assert len(rejected) == len(reasons)
    for record, words in zip(rejected, reasons):
        assert len(record["reasons"]) == 1 and record["reasons"][0].startswith(words), record
        assert record["source"] == str(path.resolve())
    samples = [s["json"] for s in wds.WebDataset(mf.shard_paths(out), shardshuffle=False, empty_check=False)]
    assert samples == [_GOOD.encode()] * n_sharded  # byte for byte, no BOM
    fault_record(fault="truncated or mis-encoded file", how=f"{case}; shard_corpus(workers=0)", times=1,
                 outcome="each unreadable line rejected with its reason, the rest sharded byte for byte", lost=0)


def test_sharder_reader_and_library_reader_agree_on_encodings(fault_record, tmp_path):
    """The sharder's .json reader (sharding.corpus: exact bytes, C JSON scanner) against the
    library's (ijson), on the inputs of test_wrong_encodings_are_refused_naming_the_file and any
    read size: both read the same documents, or both refuse the file with a UserError naming it;
    the same message for a UTF-16/32 byte-order mark or NUL bytes, the same byte offset for bytes
    that are not UTF-8."""
    import re

    from sharding.corpus import iter_document_bytes

    examples = 0

    @settings(max_examples=60, **PROFILE)
    @given(st.lists(st.sampled_from(range(len(BASE))), min_size=1, max_size=3, unique=True),
           st.sampled_from(ENCODINGS + ["invalid utf-8"] * 3), st.sampled_from([None, 1, 3, 50]),
           st.sampled_from([None, 1]), st.data())
    def prop(which, encoding, block, indent, data):
        nonlocal examples
        examples += 1
        text = json.dumps([BASE[i] for i in which], indent=indent, ensure_ascii=False)
        if encoding == "invalid utf-8":
            raw = text.encode("utf-8")
            at = data.draw(st.integers(0, len(raw)), label="at")
            raw = raw[:at] + data.draw(st.sampled_from(BAD_UTF8), label="bytes") + raw[at:]
        else:
            raw = text.encode(encoding)
        path = tmp_path / "enc.json"
        path.write_bytes(raw)
        expected, library_err = read_all(path)
        kwargs = {"block_chars": block} if block else {}  # None: the default (4 MiB, the file in one read)
        status, result = outcome(30, lambda: list(iter_document_bytes(path, **kwargs)))
        if library_err is None:
            assert status == "ok", f"{type(result).__name__}: {result}"
            assert [json.loads(r) for r in result] == expected
            return
        assert status == "error", "the library refuses this file, the sharder read it"
        message = assert_clear(result, str(path), "UTF")
        library = str(library_err)
        if "byte-order mark" in library or "NUL byte" in library:
            assert message == library
        else:
            offset = re.search(r"at byte (\d+)", library).group(1)
            assert "not UTF-8 text (" in message and f" at byte {offset})" in message, (message, library)

    prop()
    fault_record(fault="truncated or mis-encoded file",
                 how=".json arrays written as UTF-8, UTF-8 with BOM, UTF-16 (BOM, LE, BE), UTF-32, Latin-1, "
                     "CP1252, or UTF-8 with invalid bytes at a random offset; the sharder's reader "
                     "(sharding.corpus.iter_document_bytes, read sizes 1 to 4 MiB) against iter_raw_documents",
                 times=examples, outcome="the same documents, or both refuse the file: a UserError naming the "
                                         "file and the same byte offset / byte-order mark", lost=0)


# --------------------------------------------------------------------------------------------
# 4. Corrupted shard bytes: stream, iter_samples, PairBatches, score_shards, fact_join
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny rank model (random BERT), 100 distant documents sharded for it, the fact-join pairs
    (over all labels, and over the labels the denoiser kept), the scored shards; and what each
    reader gives on the intact folders (the reference for corruptions that change nothing read)."""
    from conftest import tiny_bert

    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.model import ModelConfig, RankModel
    from dsdocre.synth import generate_corpus
    from sharding.denoise_score import score_shards
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    root = tmp_path_factory.mktemp("fuzz_pipeline")
    (root / "bert").mkdir()
    bert = tiny_bert(root / "bert")
    tok, added = load_tokenizer(bert)
    RankModel(ModelConfig(dropout=0.0, window_overlap=8, pair_dim=16), tok, encoder_dir=bert,
              added_tokens=added).save_pretrained(root / "model")
    generate_corpus(root / "corpus", 0, 11, dev_docs=0, test_docs=0, distant_docs=100, progress=False)
    shard_corpus([root / "corpus" / "train_distant.json"], root / "shards", docs_per_shard=25,
                 encoder=str(root / "model" / "encoder"), workers=0, progress=False, log=None)
    fact_join(root / "shards", root / "pairs", workers=0, log=None)
    score_shards(root / "model", root / "shards", root / "scored", keep="3n", workers=0, progress=False)
    fact_join(root / "shards", root / "pairs_kept", kept_dir=root / "scored", workers=0, log=None)
    p = {"root": root, "model": root / "model", "tokenizer": load_tokenizer(root / "model" / "encoder")[0]}
    p["reference"] = {name: read(p, root) for name, read in READERS.items()}
    assert p["reference"]["pair batches"] and p["reference"]["pair batches (kept)"]
    return p


def _stream_keys(folder, fmt):
    from dsdocre.data.stream import SampleStream

    stream = SampleStream(folder, 3, seed=1, expected_format=fmt)
    try:
        return [[s["__key__"] for s in batch] for batch in stream]
    finally:
        stream.close()


def _pair_steps(p, root, pairs, scored):
    from dsdocre.data.pretrain_data import PairBatches

    batches = PairBatches(root / pairs, root / "shards", p["tokenizer"], micro_batch=2,
                          scored_dir=scored and root / scored)
    try:
        return [(s.keys, s.tokens, s.pairs) for s in batches]
    finally:
        batches.close()


def _score(p, root):
    from dsdocre.data.scored import load_kept_pairs
    from sharding.denoise_score import score_shards

    out = Path(tempfile.mkdtemp(dir=root))
    manifest = score_shards(p["model"], root / "shards", out, keep="3n", workers=0, progress=False)
    return manifest["counts"], load_kept_pairs(out)


def _join(root, kept):
    from sharding.fact_join import fact_join

    out = Path(tempfile.mkdtemp(dir=root))
    manifest = fact_join(root / "shards", out, workers=0, log=None, kept_dir=kept and root / kept)
    return manifest["counts"], [s["sha256"] for s in manifest["shards"]]


def _kept(root):
    from dsdocre.data.scored import load_kept_pairs

    return load_kept_pairs(root / "scored")


def _samples(root):
    from sharding.shard import iter_samples

    return list(iter_samples(root / "shards"))


# reader name -> reader(pipeline, folder root); which folders each one reads
READERS = {
    "iter_samples": lambda p, root: _samples(root),
    "shard stream": lambda p, root: _stream_keys(root / "shards", mf.FORMAT),
    "pair stream": lambda p, root: _stream_keys(root / "pairs", PAIRS_FORMAT),
    "pair batches": lambda p, root: _pair_steps(p, root, "pairs", None),
    "pair batches (kept)": lambda p, root: _pair_steps(p, root, "pairs_kept", "scored"),
    "score_shards": lambda p, root: _score(p, root),
    "fact_join": lambda p, root: _join(root, None),
    "fact_join (kept)": lambda p, root: _join(root, "scored"),
    "load_kept_pairs": lambda p, root: _kept(root),
}
READS = {
    "shards": ["iter_samples", "shard stream", "pair batches", "pair batches (kept)", "score_shards", "fact_join",
               "fact_join (kept)"],
    "pairs": ["pair stream", "pair batches"],
    "pairs_kept": ["pair batches (kept)"],
    "scored": ["load_kept_pairs", "pair batches (kept)", "fact_join (kept)"],
}


def corrupt(draw, path: Path) -> str:
    """Damage one file in place; returns what was done."""
    data = bytearray(path.read_bytes())
    kind = draw(st.sampled_from(["flip bits", "flip bits", "set bytes", "truncate", "append", "zero a block",
                                 "delete", "swap with a sibling"]))
    if kind == "flip bits" and data:
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "set bytes" and data:
        at = draw(st.integers(0, len(data) - 1))
        junk = draw(st.binary(min_size=1, max_size=16))
        data[at:at + len(junk)] = junk
    elif kind == "truncate":
        del data[draw(st.integers(0, max(0, len(data) - 1))):]
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=600))
    elif kind == "zero a block" and data:
        at = draw(st.integers(0, max(0, len(data) - 1))) // 512 * 512
        data[at:at + 512] = bytes(len(data[at:at + 512]))
    elif kind == "delete":
        path.unlink()
        return kind
    elif kind == "swap with a sibling":
        siblings = sorted(q for q in path.parent.iterdir() if q.suffix == path.suffix and q != path)
        if siblings:
            other = draw(st.sampled_from(siblings))
            other_data = other.read_bytes()
            other.write_bytes(bytes(data))
            path.write_bytes(other_data)
            return f"{kind} {other.name}"
        kind = "append"
        data += b"\x00" * 512
    path.write_bytes(bytes(data))
    return kind


def test_corrupted_shards_are_refused_naming_the_shard(fault_record, pipeline):
    """Bytes of a shard, fact index, scored shard or manifest flipped, overwritten, cut, extended,
    zeroed, deleted or swapped: every reader of that folder (the sample stream, iter_samples,
    PairBatches, score_shards, fact_join, load_kept_pairs) refuses with a UserError naming the
    damaged file (a manifest: its folder) within a time limit, or, for manifest bytes that no
    reader uses, reads exactly what it read from the intact folder. Shard bytes always fail."""
    examples = 0
    refused = {"shard": 0, "manifest": 0}
    harmless = 0

    @settings(max_examples=60, **PROFILE)
    @given(st.sampled_from(sorted(READS)), st.booleans(), st.data())
    def prop(folder, hit_manifest, data):
        nonlocal examples, harmless
        examples += 1
        with tempfile.TemporaryDirectory(dir=pipeline["root"]) as tmp:
            root = Path(tmp)
            for name in READS:
                shutil.copytree(pipeline["root"] / name, root / name)
            files = sorted(q.name for q in (root / folder).iterdir() if q.is_file() and q.name != mf.REJECTED)
            shard_files = [n for n in files if n != mf.MANIFEST]
            target = mf.MANIFEST if hit_manifest or not shard_files else data.draw(st.sampled_from(shard_files))
            before = (root / folder / target).read_bytes()
            how = corrupt(data.draw, root / folder / target)
            changed = not (root / folder / target).exists() or (root / folder / target).read_bytes() != before
            for reader in READS[folder]:
                status, result = outcome(120, READERS[reader], pipeline, root)
                if status == "error":
                    names = [str(root / folder)] if target == mf.MANIFEST else [target]
                    assert_clear(result, *names)
                    refused["manifest" if target == mf.MANIFEST else "shard"] += 1
                else:
                    assert target == mf.MANIFEST or not changed, f"{reader} read {folder}/{target} after {how}"
                    assert result == pipeline["reference"][reader], f"{reader}: different data after {how}"
                    harmless += 1

    prop()
    assert refused["shard"] and refused["manifest"]
    fault_record(fault="corrupted shard",
                 how="a document / pair / scored shard, fact index or manifest.json with bits flipped, bytes "
                     "overwritten, cut, extended, a 512-byte block zeroed, deleted or swapped with a sibling; "
                     "SampleStream, iter_samples, PairBatches (with and without kept labels), score_shards, "
                     "fact_join and load_kept_pairs on the damaged folder",
                 times=examples, outcome=f"every damaged shard refused by every reader with a UserError naming it "
                                         f"({refused['shard']} refusals); damaged manifests refused naming the folder "
                                         f"({refused['manifest']}) or, where only unused bytes changed, the same data "
                                         f"read ({harmless}); no hang", lost=0)
