"""Entity markers, blanking, long documents through the windowed encoder, save/load."""

from __future__ import annotations

import pytest
import torch

from dsdocre.data.documents import Document
from dsdocre.data.encoding import BLANK, end_marker, load_tokenizer, start_marker
from conftest import tiny_bert, tiny_roberta


@pytest.fixture(scope="module")
def tokenizer(encoder_dir):
    return load_tokenizer(encoder_dir)[0]


def doc_with(sents, vertex_set, labels=()):
    return Document.from_json({"title": "t", "sents": sents, "vertexSet": vertex_set, "labels": list(labels)})


def test_markers_surround_every_mention(tokenizer):
    doc = doc_with([["Marie", "Curie", "was", "born", "in", "Warsaw", "."], ["Curie", "died", "."]],
                   [[{"name": "Marie Curie", "pos": [0, 2], "sent_id": 0, "type": "PER"},
                     {"name": "Curie", "pos": [0, 1], "sent_id": 1, "type": "PER"}],
                    [{"name": "Warsaw", "pos": [5, 6], "sent_id": 0, "type": "LOC"}]])
    enc = tokenizer.encode(doc)
    toks = tokenizer.tokenizer.convert_ids_to_tokens(enc.input_ids)
    pieces = tokenizer.tokenizer.tokenize("Marie Curie")  # word pieces, lower-cased by this vocabulary
    assert toks[:len(pieces) + 3] == [start_marker(0), *pieces, end_marker(0), "was"]
    assert [toks[p] for p in enc.mention_starts[0]] == [start_marker(0), start_marker(0)]
    assert toks[enc.mention_starts[1][0]:enc.mention_starts[1][0] + 3] == [start_marker(1), "warsaw", end_marker(1)]
    assert enc.mention_sent_ids == [[0, 1], [0]]
    assert start_marker(0) == "[unused1]" and end_marker(0) == "[unused2]" and start_marker(1) == "[unused3]"


def test_blanking_replaces_mention_words_but_keeps_markers(tokenizer):
    doc = doc_with([["Marie", "Curie", "met", "Pierre", "."]],
                   [[{"name": "Marie Curie", "pos": [0, 2], "sent_id": 0, "type": "PER"}],
                    [{"name": "Pierre", "pos": [3, 4], "sent_id": 0, "type": "PER"}]])
    toks = tokenizer.tokenizer.convert_ids_to_tokens(tokenizer.encode(doc, blank_entities=[0]).input_ids)
    assert toks == [start_marker(0), BLANK, end_marker(0), "met", start_marker(1), "pierre", end_marker(1), "."]


def test_nested_mentions_stay_bracketed(tokenizer):
    doc = doc_with([["University", "of", "Paris", "rocks"]],
                   [[{"name": "University of Paris", "pos": [0, 3], "sent_id": 0, "type": "ORG"}],
                    [{"name": "Paris", "pos": [2, 3], "sent_id": 0, "type": "LOC"}]])
    toks = tokenizer.tokenizer.convert_ids_to_tokens(tokenizer.encode(doc).input_ids)
    assert toks == [start_marker(0), "university", "of", start_marker(1), "paris", end_marker(1), end_marker(0), "rocks"]


def long_document(n_filler_sents: int = 60) -> Document:
    filler = [["the", "committee", "met", "again", "and", "discussed", "the", "weather", "at", "length", "."]]
    sents = [["Ada", "Lovelace", "wrote", "notes", "."]] + filler * n_filler_sents + [["Lovelace", "lived", "in", "London", "."]]
    last = len(sents) - 1
    return doc_with(sents, [[{"name": "Ada Lovelace", "pos": [0, 2], "sent_id": 0, "type": "PER"},
                             {"name": "Lovelace", "pos": [0, 1], "sent_id": last, "type": "PER"}],
                            [{"name": "London", "pos": [3, 4], "sent_id": last, "type": "LOC"}]],
                    [{"h": 0, "t": 1, "r": "P551", "evidence": [last]}])


def test_mention_past_token_512_gets_a_representation(tokenizer, encoder_dir):
    from dsdocre.data.examples import build_examples, collate
    from dsdocre.model import ModelConfig, RelationClassifier

    doc = long_document()
    example = build_examples([doc], tokenizer)[0]
    london = example.encoded.mention_starts[1][0]
    assert london > 600, "the test needs a mention well past the encoder's 512 positions"
    model = RelationClassifier(ModelConfig(dropout=0.0), tokenizer, encoder_dir=encoder_dir).eval()
    batch = collate([example], tokenizer.pad_id)
    assert len(model.encoder.windows(batch["lengths"].tolist())) >= 2
    with torch.no_grad():
        states = model.encoder(batch["tokens"], batch["lengths"], tokenizer.cls_id, tokenizer.sep_id)
        entities = model.entity_states(batch)
        logits = model(batch)
    assert states.shape[1] == len(example.encoded.input_ids)
    assert torch.isfinite(states).all()
    assert states[0, london].abs().sum() > 0  # a real state, not padding
    # London's state depends on London's own context, not on the first window only
    assert torch.isfinite(entities).all() and entities[0, 1].abs().sum() > 0
    assert logits.shape == (1, 2, 97) and torch.isfinite(logits).all()

    # In the overlap, states are the average of the two windows; outside it, one window's state.
    span = model.encoder.max_len - 2
    with torch.no_grad():
        first = model.encoder.model(input_ids=torch.tensor([[tokenizer.cls_id] + example.encoded.input_ids[:span]
                                                            + [tokenizer.sep_id]])).last_hidden_state[0, 1:-1]
    second_start = model.encoder.windows(batch["lengths"].tolist())[1][1]
    assert torch.allclose(states[0, :second_start], first[:second_start], atol=1e-4)
    assert not torch.allclose(states[0, second_start:span], first[second_start:span], atol=1e-4)


def test_short_and_long_documents_batch_together(tokenizer, encoder_dir):
    from dsdocre.data.examples import build_examples, collate
    from dsdocre.model import ModelConfig, RelationClassifier

    short = doc_with([["Ada", "met", "Bob", "."]], [[{"name": "Ada", "pos": [0, 1], "sent_id": 0, "type": "PER"}],
                                                    [{"name": "Bob", "pos": [2, 3], "sent_id": 0, "type": "PER"}]])
    model = RelationClassifier(ModelConfig(dropout=0.0), tokenizer, encoder_dir=encoder_dir).eval()
    examples = build_examples([short, long_document()], tokenizer)
    with torch.no_grad():
        together = model(collate(examples, tokenizer.pad_id))
        alone = model(collate(examples[:1], tokenizer.pad_id))
    assert torch.allclose(together[0, :2], alone[0, :2], atol=1e-4)


def test_save_and_load_pretrained(tmp_path, tokenizer, encoder_dir):
    from transformers import AutoModel

    from dsdocre.data.examples import build_examples, collate
    from dsdocre.model import ModelConfig, RelationClassifier

    model = RelationClassifier(ModelConfig(dropout=0.0), tokenizer, encoder_dir=encoder_dir).eval()
    model.special_ids = (tokenizer.cls_id, tokenizer.sep_id, 7)  # whatever was trained with is what is restored
    model.save_pretrained(tmp_path / "m", threshold=0.3)
    loaded, meta = RelationClassifier.from_pretrained(tmp_path / "m")  # nothing set by the caller
    loaded.eval()
    assert loaded.special_ids == (tokenizer.cls_id, tokenizer.sep_id, 7)
    assert meta["special_token_ids"] == {"cls": tokenizer.cls_id, "sep": tokenizer.sep_id, "pad": 7}
    assert meta["max_input_tokens"] == loaded.encoder.max_len == 512
    assert loaded.tokenizer.fingerprint() == tokenizer.fingerprint()
    assert loaded.tokenizer.tokenizer.model_max_length == tokenizer.tokenizer.model_max_length == 512
    assert meta["threshold"] == 0.3
    model.special_ids = loaded.special_ids = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    batch = collate(build_examples([long_document(5)], tokenizer), tokenizer.pad_id)
    with torch.no_grad():
        assert torch.allclose(model(batch), loaded(batch), atol=1e-5)
    plain = AutoModel.from_pretrained(tmp_path / "m" / "encoder")  # plain transformers loads the encoder
    plain_weights = plain.state_dict()
    for name, weight in model.encoder.model.state_dict().items():
        assert torch.equal(plain_weights[name], weight), name
    assert not list(tmp_path.glob("m.tmp*"))


# ---- markers nest whatever the entity indices ----------------------------------------------------
@pytest.mark.parametrize("outer", [0, 1], ids=["outer entity first", "outer entity second"])
@pytest.mark.parametrize("inner_span", [(1, 3), (0, 2), (1, 2), (0, 3)],
                         ids=["same end", "same start", "strictly inside", "same span"])
def test_overlapping_mentions_nest(tokenizer, outer, inner_span):
    inner = 1 - outer
    mentions = {outer: {"name": "University of Warsaw", "pos": [0, 3], "sent_id": 0, "type": "ORG"},
                inner: {"name": "x", "pos": list(inner_span), "sent_id": 0, "type": "LOC"}}
    doc = doc_with([["university", "of", "warsaw", "grew", "."]], [[mentions[0]], [mentions[1]]])
    toks = tokenizer.tokenizer.convert_ids_to_tokens(tokenizer.encode(doc).input_ids)
    # A well-bracketed sequence: every end marker closes the most recently opened span.
    opened = []
    for tok in toks:
        if tok in (start_marker(0), start_marker(1)):
            opened.append(tok)
        elif tok in (end_marker(0), end_marker(1)):
            e = 0 if tok == end_marker(0) else 1
            assert opened and opened[-1] == start_marker(e), toks
            opened.pop()
    assert not opened
    if tuple(inner_span) != (0, 3):  # a strictly shorter span is inside: it opens after and closes before
        assert toks.index(start_marker(outer)) < toks.index(start_marker(inner))
        assert toks.index(end_marker(inner)) < toks.index(end_marker(outer))
    words = [t for t in toks if not t.startswith("[unused")]
    assert words == ["university", "of", "warsaw", "grew", "."]


# ---- any encoder's position limit; vocabularies without [unused] tokens ----------------------------
def _long_doc(words_per_sent=20, sents=15):
    sent = ["the", "city", "of", "river", "was", "near", "a", "word"] * 3
    text = [sent[:words_per_sent] for _ in range(sents)]
    return doc_with(text, [[{"name": "city", "pos": [1, 2], "sent_id": 0, "type": "LOC"},
                            {"name": "city", "pos": [1, 2], "sent_id": sents - 1, "type": "LOC"}],
                           [{"name": "river", "pos": [3, 4], "sent_id": sents - 1, "type": "LOC"}]],
                    [{"h": 0, "t": 1, "r": "P131", "evidence": [sents - 1]}])


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_any_encoder_windows_within_its_real_position_limit(tmp_path, family):
    from dsdocre.data.examples import build_examples, collate
    from dsdocre.model import ModelConfig, RelationClassifier

    encoder = tiny_bert(tmp_path) if family == "bert" else tiny_roberta(tmp_path)
    tok, added = load_tokenizer(encoder, max_entities=4)
    assert (added > 0) == (family == "roberta")  # RoBERTa's vocabulary has no [unusedK]: they are added
    limit = 48 if family == "bert" else 64  # BERT: its tokenizer says 48 (of 64 positions); RoBERTa: 66 - 2
    assert tok.tokenizer.model_max_length == limit  # the tokenizer's own limit is kept
    model = RelationClassifier(ModelConfig(dropout=0.0, max_entities=4, window_overlap=16), tok,
                               encoder_dir=encoder, added_tokens=added).eval()
    assert model.encoder.max_len == limit  # RoBERTa: 66 positions offset by padding_idx + 1 hold 64 tokens
    assert model.encoder.model.get_input_embeddings().num_embeddings == len(tok.tokenizer)
    example = build_examples([_long_doc()], tok)[0]
    assert len(example.encoded.input_ids) > 4 * model.encoder.max_len  # far past the limit
    batch = collate([example], tok.pad_id)
    windows = model.encoder.windows(batch["lengths"].tolist())
    assert len(windows) > 4 and max(n for _, _, n in windows) + 2 == limit
    with torch.no_grad():
        logits = model(batch)
    assert logits.shape == (1, 2, 97) and torch.isfinite(logits).all()

    model.save_pretrained(tmp_path / "saved")
    loaded, meta = RelationClassifier.from_pretrained(tmp_path / "saved")
    assert loaded.encoder.max_len == limit and meta["max_input_tokens"] == limit
    assert loaded.special_ids == (tok.cls_id, tok.sep_id, tok.pad_id)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(batch), logits, atol=1e-5)


def test_blanking_from_the_encoding_equals_blanking_while_encoding(tokenizer):
    """Pre-training blanks mentions in stored encodings (shards hold mention end positions)."""
    import random

    from dsdocre.synth import iter_documents

    rng = random.Random(0)
    docs = [Document.from_json(d) for d in iter_documents("train_annotated", 3, 25)]
    nested = doc_with([["university", "of", "warsaw", "grew", "."]],
                      [[{"name": "warsaw", "pos": [2, 3], "sent_id": 0, "type": "LOC"}],
                       [{"name": "University of Warsaw", "pos": [0, 3], "sent_id": 0, "type": "ORG"}]])
    checked = 0
    for doc in docs + [nested, nested]:
        encoded = tokenizer.encode(doc)
        for _ in range(3):
            chosen = [e for e in range(doc.num_entities) if rng.random() < 0.4]
            assert tokenizer.blank(encoded, chosen) == tokenizer.encode(doc, blank_entities=chosen)
            checked += bool(chosen)
    assert checked > 40
    encoded = tokenizer.encode(nested)
    assert [encoded.input_ids[p] for p in encoded.mention_ends[1]] == [tokenizer.end_ids[1]]
    old = type(encoded)(encoded.input_ids, encoded.mention_starts, encoded.mention_sent_ids)
    with pytest.raises(ValueError, match="format version 1"):
        tokenizer.blank(old, [0])
