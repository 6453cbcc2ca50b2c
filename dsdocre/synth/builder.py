"""Synthetic DocRED-format corpus: an annotated set and a distantly supervised set from one hidden KB.

``dsdocre synth --docs N --seed S --out DIR`` (or :func:`generate_corpus`) writes a corpus in the
shape of DocRED / Re-DocRED, generated from a hidden knowledge base (KB) so that every stage of the
project (distant labelling, denoising, pre-training, fine-tuning, evaluation) can run end to end,
offline, with a known ground truth.

The knowledge base
------------------
Built deterministically from the seed (:class:`KnowledgeBase`): about 20,000 typed entities (DocRED
types ``PER``, ``ORG``, ``LOC``, ``TIME``, ``NUM``, ``MISC``; finer kinds such as person, city,
region, country, company, university, party, team, band, film, book, album, award, language), each
with a stable KB id (``"Q123"``), a name made from syllable and word pools, and 1-3 aliases (full
name, surname, short name, acronym; a country's demonym such as ``"Velorian"``, used as DocRED
does in ``"a Velorian actor"``). Facts ``(h, r, t)`` use 37 of DocRED's 96 Wikidata relations, each
with type constraints (P19 place of birth PER->city, P17 country, P131/P150 located in / contains,
P1376/P36 capital of / capital, P569 date of birth, P108 employer, P161 cast member, P50 author, ...).
Facts come in *links* that hold one or more relations at once: a region and its country hold P131,
P17 and the inverse P150; a capital city and its country hold P1376, P17 and P36; spouses hold P26
both ways; a band member holds P463 and the band P527. So many entity pairs are multi-label.

The documents
-------------
Each document is about a topic entity (a person, company, film, city, ...) with about 4-12
entities and 4-10 sentences (distantly supervised ones a few more: see below), tokenised like
DocRED (punctuation and ``'s`` are separate words).
Relation-specific sentence patterns, several per relation, state KB facts:

* within one sentence (*intra*): ``"Jorin Velsa ( born 3 May 1961 in Tarbeck ) is a Velorian actor ."``
* across sentences (*inter*): the entity is introduced in one sentence and referred to later by a
  pronoun or a nominal anaphor that is not a mention (``"He"``, ``"The company"``), in the sentence
  that states the relation; the evidence is both sentences, and no sentence mentions both entities.

Entities are mentioned again across sentences under other aliases (``"Velsa"``), and distractor
sentences mention entities without stating any relation. Every mention carries the extra field
``"kb_id"`` (readers of DocRED ignore unknown fields), so later stages can link entities across
documents. About 30-50 % of the annotated facts are inter-sentence, and most entity pairs are NA.

Annotated vs distantly supervised
---------------------------------
* Annotated documents (``train_annotated.json``, ``dev.json``, ``test.json``): the labels are
  exactly the facts the text states, with their evidence sentences. A KB fact between two entities
  of the document that the text does not state is *not* labelled (NA), as in DocRED.
* Distantly supervised documents (``train_distant.json``): other documents from the same generator
  and KB, labelled the way distant supervision labels text: every KB fact between two entities of
  the document, stated or not (``"evidence": []``). The unstated ones are the noise. Its amount is
  controlled: ``--noise-rate`` (default 0.6) is the target fraction of the *inter-sentence* DS
  labels that are noise. The generator reaches it per document, by co-mentioning (in distractor
  sentences) entities that hold unstated KB facts with the document's entities, or, when a document
  already holds too much noise, by stating some of its unstated facts. The realised rate is
  measured and written to ``stats.json`` (it lands within about 0.01 of the target on a few
  hundred documents). Intra-sentence noise (two related entities in one sentence that states
  nothing about them) also occurs, uncontrolled, at about 5 %.

Files written to ``--out``
--------------------------
``train_annotated.json``     N annotated documents (``--docs``)
``dev.json``, ``test.json``  annotated documents, with labels (``--dev-docs``, ``--test-docs``;
                             default ``max(50, N // 5)`` each)
``train_distant.json``       distantly supervised documents (``--distant-docs``, default N)
``train_distant_truth.jsonl`` one line per DS document, in file order:
                             ``{"title", "stated": [[h, t, r], ...], "noise": [[h, t, r], ...]}``
                             (entity indices of that document); ``stated`` + ``noise`` are its labels
``kb.json``                  ``{"entities": {kb_id: {"name", "aliases", "type", "kind"}},
                             "facts": [[h_kb, r, t_kb], ...]}``
``stats.json``               per split: documents, sentences, entities, mentions, labels,
                             intra/inter labels, NA-pair fraction, multi-label pairs; for the DS
                             set the stated/noise counts and the realised noise rates; the seed.

Titles are unique across all files (``"Jorin Velsa (actor) [dev-12]"``). The output is a pure
function of the arguments: the KB comes from ``random.Random`` seeded with the seed, and document
``i`` of split ``s`` from ``random.Random(f"{seed}/{s}/{i}")``, so documents can be generated in
any order or in parallel (:func:`iter_documents` with ``start``), the first documents of a set do
not depend on how many are asked for, and the files are byte-identical for the same arguments (and
Python version). JSON arrays are written one document at a time, so memory stays small (under
100 MB); 100,000 documents of each kind take about a minute on one core.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import Iterator

from dsdocre.relations import relation_names

__all__ = ["KnowledgeBase", "generate_corpus", "iter_documents", "add_arguments", "run", "SPLITS"]

# The four document sets, in the order they are written; the DS style is used for "train_distant".
SPLITS = ("train_annotated", "dev", "test", "train_distant")
_SPLIT_TAG = {"train_annotated": "train", "dev": "dev", "test": "test", "train_distant": "distant"}
_SPLIT_ALIAS = {"annotated": "train_annotated", "train": "train_annotated", "distant": "train_distant",
                "ds": "train_distant"}

# --------------------------------------------------------------------------------------------
# Link kinds: a link between two KB entities (a, b) holds one or more facts. Every fact of the
# KB belongs to exactly one link; a sentence that states a link states all of its facts.
# --------------------------------------------------------------------------------------------
_A, _B = 0, 1
LINK_FACTS: dict[str, tuple[tuple[int, str, int], ...]] = {
    # geography
    "capital_country": ((_A, "P1376", _B), (_B, "P36", _A), (_A, "P17", _B)),
    "official_language": ((_A, "P37", _B),),
    "region_country": ((_A, "P131", _B), (_A, "P17", _B), (_B, "P150", _A)),
    "city_region": ((_A, "P131", _B), (_B, "P150", _A)),
    "region_capital": ((_A, "P1376", _B), (_B, "P36", _A), (_A, "P131", _B), (_B, "P150", _A)),
    "city_country": ((_A, "P17", _B),),
    # people
    "birth_place": ((_A, "P19", _B),),
    "death_place": ((_A, "P20", _B),),
    "birth_date": ((_A, "P569", _B),),
    "death_date": ((_A, "P570", _B),),
    "citizenship": ((_A, "P27", _B),),
    "employer": ((_A, "P108", _B),),
    "educated": ((_A, "P69", _B),),
    "spouse": ((_A, "P26", _B), (_B, "P26", _A)),
    "father": ((_A, "P40", _B), (_B, "P22", _A)),
    "mother": ((_A, "P40", _B), (_B, "P25", _A)),
    "award": ((_A, "P166", _B),),
    "party": ((_A, "P102", _B),),
    "team": ((_A, "P54", _B),),
    "band_member": ((_A, "P463", _B), (_B, "P527", _A)),
    # organisations
    "hq": ((_A, "P159", _B),),
    "org_country": ((_A, "P17", _B),),
    "inception": ((_A, "P571", _B),),
    "founder": ((_A, "P112", _B),),
    "subsidiary": ((_A, "P749", _B), (_B, "P355", _A)),
    "uni_location": ((_A, "P131", _B),),
    "artist_label": ((_A, "P264", _B),),
    # works
    "director": ((_A, "P57", _B),),
    "cast": ((_A, "P161", _B),),
    "pubdate": ((_A, "P577", _B),),
    "work_country": ((_A, "P495", _B),),
    "work_language": ((_A, "P364", _B),),
    "author": ((_A, "P50", _B),),
    "author_notable": ((_A, "P50", _B), (_B, "P800", _A)),
    "publisher": ((_A, "P123", _B),),
    "performer": ((_A, "P175", _B),),
    "album_label": ((_A, "P264", _B),),
}

# Sentence patterns. Slots: {a} {b} {c} {d} mention an entity; "!" marks a slot that may be
# realised as an anaphor (pronoun / nominal, not a mention) when it holds the focus entity;
# {a's} / {a!'s} possessive; {b:adj} the demonym; {a:noun} a descriptor ("actor", "drama film");
# {a:is} is/was, {a:has} has/had, {a:he}, {a:his} pronouns, {b:child} son/daughter,
# {b:spouse} husband/wife; {b*} a list of entities ("X , Y and Z"). [x|y z|] picks one option.
_LINK_TEMPLATES: dict[str, list[str]] = {
    "capital_country": [
        "{a!} is the capital [and largest city|] of {b} .",
        "{b!'s} capital [city|] is {a} .",
        "The capital of {b} is {a} .",
        "{a!} has served as the capital of {b} since [independence|the nineteenth century] .",
    ],
    "official_language": [
        "The official language of {a} is {b} .",
        "{b} is the official language of {a} .",
        "{a!} [recognises|uses] {b} as its [sole|] official language .",
    ],
    "region_country": [
        "{a!} is a [province|region] of {b} .",
        "{a!} is one of the [provinces|administrative regions] of {b} .",
        "{b!} is divided into several [provinces|regions] , [including|among them] {a} .",
    ],
    "city_region": [
        "{a!} is a [town|municipality] in {b} .",
        "{a!} lies within {b} .",
        "{b!} [contains|includes] the [town|municipality] of {a} .",
    ],
    "region_capital": [
        "{a!} is the [administrative centre|capital|seat] of {b} .",
        "The [capital|seat] of {b} is {a} .",
        "{b!} is administered from its capital , {a} .",
    ],
    "city_country": [
        "{a!} is a {b:adj} [city|town] .",
        "{a!} is a city [located|situated] in {b} .",
    ],
    "birth_place": [
        "{a!} was born in {b} .",
        "{a!} is a native of {b} .",
        "{a!} was born and raised in {b} .",
        "Born in {b} , {a} [grew up|was raised] [in a family of teachers|on a farm|] .",
    ],
    "death_place": [
        "{a!} died in {b} [after a long illness|] .",
        "{a!} passed away in {b} .",
        "{a!} spent {a:his} final years in {b} , where {a:he} died .",
    ],
    "birth_date": [
        "{a!} was born on {b} .",
        "{a!'s} date of birth is {b} .",
    ],
    "death_date": [
        "{a!} died on {b} [at home|in hospital|] .",
        "{a!} passed away on {b} .",
    ],
    "citizenship": [
        "{a!} {a:is} a {b:adj} {a:noun} .",
        "{a!} became a citizen of {b} [in later life|as a young adult] .",
        "{a!} {a:is} a citizen of {b} .",
        "{a!} {a:has} {b:adj} citizenship .",
    ],
    "employer": [
        "{a!} [worked|has worked] for {b} [for many years|] .",
        "{a!} joined {b} as [a researcher|an engineer|a consultant|an analyst] .",
        "{a!} was employed by {b} .",
        "{b!} hired {a} [as a senior adviser|in a management role] .",
    ],
    "educated": [
        "{a!} studied [law|physics|history|economics|medicine] at {b} .",
        "{a!} graduated from {b} .",
        "{a!} was educated at {b} .",
        "{a!} received {a:his} degree from {b} .",
    ],
    "spouse": [
        "{a!} married {b} [in a private ceremony|] .",
        "{a!} and {b} [married|were married] [in a private ceremony|] .",
        "{a!'s} {b:spouse} is {b} .",
        "{a!} {a:is} married to {b} .",
    ],
    "father": [
        "{a!} {a:has} a {b:child} , {b} .",
        "{b!} is the {b:child} of {a} .",
        "{a!'s} {b:child} {b} [also became famous|later followed in the same career] .",
    ],
    "award": [
        "{a!} [received|won] the {b} [for {a:his} work|] .",
        "{a!} was awarded the {b} .",
        "{a!} was honoured with the {b} .",
    ],
    "party": [
        "{a!} {a:is} a member of the {b} .",
        "{a!} joined the {b} [as a student|early in {a:his} career|] .",
        "{a!} represented the {b} in [parliament|the national assembly] .",
    ],
    "team": [
        "{a!} [played|has played] for {b} .",
        "{a!} signed a contract with {b} [as a teenager|] .",
        "{b!} signed {a} [from a rival club|] .",
    ],
    "band_member": [
        "{a!} {a:is} a member of {b} .",
        "{a!} plays [guitar|bass|drums|keyboards] in {b} .",
        "{a!} [joined|formed] the band {b} .",
        "{b!} features {a} on [vocals|guitar|drums] .",
        "{b!'s} line - up consists of {a*} .",
    ],
    "hq": [
        "{a!} is headquartered in {b} .",
        "{a!'s} headquarters are located in {b} .",
        "{a!} is based in {b} .",
    ],
    "org_country": [
        "{a!} is a {b:adj} {a:noun} .",
        "{a!} operates [mainly|primarily] in {b} .",
        "{a!} is a {a:noun} registered in {b} .",
    ],
    "inception": [
        "{a!} was founded in {b} .",
        "{a!} was established in {b} .",
        "{a!} has existed since {b} .",
    ],
    "founder": [
        "{a!} was founded by {b} .",
        "{b!} founded {a} [together with several partners|] .",
        "{b!} established {a} .",
    ],
    "subsidiary": [
        "{a!} is a subsidiary of {b} .",
        "{b!} acquired {a} [and kept it as a subsidiary|] .",
        "{a!} operates as a division of {b} .",
    ],
    "uni_location": [
        "{a!} is a [public|private] university in {b} .",
        "{a!} has its main campus in {b} .",
        "{a!} is located in {b} .",
    ],
    "artist_label": [
        "{a!} {a:is} signed to the record label {b} .",
        "{a!} recorded for {b} .",
        "{b!} signed {a} to a recording contract .",
    ],
    "director": [
        "{a!} was directed by {b} .",
        "{b!} directed {a} .",
        "{a!} is a {a:noun} by director {b} .",
    ],
    "cast": [
        "{a!} stars {b*} .",
        "{b!} starred in {a} .",
        "{b!} played the lead role in {a} .",
        "{a!'s} cast includes {b*} .",
    ],
    "pubdate": [
        "{a!} was released in {b} .",
        "{a!} first appeared in {b} .",
        "{a!} came out in {b} .",
    ],
    "work_country": [
        "{a!} is a {b:adj} {a:noun} .",
        "{a!} was produced in {b} .",
    ],
    "work_language": [
        "{a!} was [written|originally made] in {b} .",
        "The original language of {a} is {b} .",
        "{a!} is a {b} - language {a:noun} .",
    ],
    "author": [
        "{a!} is a {a:noun} by {b} .",
        "{a!} was written by {b} .",
        "{b!} wrote {a} .",
    ],
    "author_notable": [
        "{b!'s} best - known work is the {a:noun} {a} .",
        "{a!} is the most famous {a:noun} by {b} .",
        "{b!} is best known as the author of {a} .",
    ],
    "publisher": [
        "{a!} was published by {b} .",
        "{b!} published {a} .",
    ],
    "performer": [
        "{a!} is an {a:noun} by {b} .",
        "{a!} was recorded by {b} .",
        "{b!} released {a} .",
    ],
    "album_label": [
        "{a!} was issued by the label {b} .",
        "{b!} issued {a} .",
    ],
}
_LINK_TEMPLATES["mother"] = _LINK_TEMPLATES["father"]

# Opening sentences per topic kind: (pattern, [(link kind, head slot, tail slot), ...]).
_INTRO_TEMPLATES: dict[str, list[tuple[str, list[tuple[str, str, str]]]]] = {
    "person": [
        ("{a} ( born {b} in {c} ) {a:is} a {d:adj} {a:noun} .",
         [("birth_date", "a", "b"), ("birth_place", "a", "c"), ("citizenship", "a", "d")]),
        ("{a} ( {b} – {c} ) was a {d:adj} {a:noun} .",
         [("birth_date", "a", "b"), ("death_date", "a", "c"), ("citizenship", "a", "d")]),
        ("{a} ( born {b} ) {a:is} a {c:adj} {a:noun} .", [("birth_date", "a", "b"), ("citizenship", "a", "c")]),
        ("{a} {a:is} a {b:adj} {a:noun} .", [("citizenship", "a", "b")]),
        ("{a} ( born {b} ) {a:is} a {a:noun} .", [("birth_date", "a", "b")]),
        ("{a} {a:is} a {a:noun} born in {b} .", [("birth_place", "a", "b")]),
    ],
    "company": [
        ("{a} is a {b:adj} {a:noun} headquartered in {c} .", [("org_country", "a", "b"), ("hq", "a", "c")]),
        ("{a} is a {a:noun} founded by {b} in {c} .", [("founder", "a", "b"), ("inception", "a", "c")]),
        ("{a} is a {a:noun} founded in {b} .", [("inception", "a", "b")]),
        ("{a} is a {b:adj} {a:noun} .", [("org_country", "a", "b")]),
    ],
    "university": [
        ("{a} is a [public|private] university in {b} , {c} .",
         [("uni_location", "a", "b"), ("org_country", "a", "c")]),
        ("{a} is a {b:adj} university founded in {c} .", [("org_country", "a", "b"), ("inception", "a", "c")]),
    ],
    "party": [
        ("{a} is a {b:adj} political party founded in {c} .", [("org_country", "a", "b"), ("inception", "a", "c")]),
        ("{a} is a political party in {b} .", [("org_country", "a", "b")]),
    ],
    "team": [
        ("{a} is a {b:adj} football club founded in {c} .", [("org_country", "a", "b"), ("inception", "a", "c")]),
        ("{a} is a {b:adj} football club .", [("org_country", "a", "b")]),
    ],
    "band": [
        ("{a} is a {b:adj} {a:noun} formed in {c} .", [("org_country", "a", "b"), ("inception", "a", "c")]),
        ("{a} is a {a:noun} from {b} .", [("org_country", "a", "b")]),
    ],
    "film": [
        ("{a} is a {b} {c:adj} {a:noun} directed by {d} .",
         [("pubdate", "a", "b"), ("work_country", "a", "c"), ("director", "a", "d")]),
        ("{a} is a {b} {a:noun} directed by {c} .", [("pubdate", "a", "b"), ("director", "a", "c")]),
        ("{a} is a {b} {a:noun} starring {c*} .", [("pubdate", "a", "b"), ("cast", "a", "c")]),
        ("{a} is a {b:adj} {a:noun} .", [("work_country", "a", "b")]),
    ],
    "book": [
        ("{a} is a {b} {a:noun} by {c} .", [("pubdate", "a", "b"), ("author", "a", "c")]),
        ("{a} is a {a:noun} by {b} , first published in {c} .", [("author", "a", "b"), ("pubdate", "a", "c")]),
        ("{a} is a {a:noun} written by {b} .", [("author", "a", "b")]),
    ],
    "album": [
        ("{a} is a {b} {a:noun} by {c} .", [("pubdate", "a", "b"), ("performer", "a", "c")]),
        ("{a} is an {a:noun} by {b} , issued by {c} .", [("performer", "a", "b"), ("album_label", "a", "c")]),
    ],
    "city": [
        ("{a} is a [town|city] in {b} , {c} .", [("city_region", "a", "b"), ("city_country", "a", "c")]),
        ("{a} is the capital of {b} , a province of {c} .",
         [("region_capital", "a", "b"), ("region_country", "b", "c")]),
        ("{a} is the capital and largest city of {b} .", [("capital_country", "a", "b")]),
        ("{a} is a {b:adj} city .", [("city_country", "a", "b")]),
    ],
    "region": [
        ("{a} is a {b:adj} province whose capital is {c} .",
         [("region_country", "a", "b"), ("region_capital", "c", "a")]),
        ("{a} is a province of {b} .", [("region_country", "a", "b")]),
    ],
    "country": [
        ("{a} is a [sovereign state|country] whose capital is {b} .", [("capital_country", "b", "a")]),
        ("{a} is a country where {b} is the official language .", [("official_language", "a", "b")]),
    ],
}
for _k in ("publisher", "label"):
    _INTRO_TEMPLATES[_k] = _INTRO_TEMPLATES["company"]

# Distractor sentences: no relation stated. Extra slots name the kind of entity they need
# ("city", "TIME:year", "NUM", "person", "country", "work"); slot x holds the given entity.
_DISTRACTORS: dict[str, list[str]] = {
    "PER": [
        "{x} later [commented on|spoke about] the [decision|project|controversy] .",
        "{x} attended a [ceremony|conference|reception] in {y:city} .",
        "{x} met {y:person} during a visit to {z:city} .",
        "In {y:year} , {x} [toured|travelled through] {z:country} .",
        "{x} gave an interview [to a local newspaper|on national radio] .",
    ],
    "ORG": [
        "{x} [announced|reported] [record profits|a new strategy|a restructuring] .",
        "{x} opened a branch office in {y:city} .",
        "{x} employs about {y:num} people .",
        "In {y:year} , {x} [was criticised|faced a legal dispute] .",
    ],
    "city": [
        "{x} has a population of {y:num} .",
        "A [music|film|food] festival is held in {x} every [summer|autumn] .",
        "A railway line from {x} to {y:city} opened in {z:year} .",
    ],
    "LOC": [
        "{x} has a population of about {y:num} .",
        "Tourism is important to the economy of {x} .",
        "{x} hosted a [summit|sports event] in {y:year} .",
    ],
    "MISC": [
        "{x} received [mixed|positive|favourable] reviews .",
        "Critics compared {x} to {y:work} .",
        "{x} sold {y:num} copies [in its first year|] .",
    ],
    "award": ["The {x} is presented [annually|every year] ."],
    "language": ["{x} is spoken by about {y:num} people .", "{x} is taught in many schools ."],
    "TIME": [
        "In {x} , [a revised edition|a documentary about the subject] appeared .",
        "{x} marked a turning point .",
    ],
    "date": [
        "On {x} , [a revised edition|a documentary about the subject] appeared .",
        "{x} is [also|] remembered as the date of a major storm .",
    ],
    "NUM": ["About {x} visitors came that year ."],
}

# Nominal anaphors (not mentions) that refer back to an entity of a kind.
_NOMINAL = {
    "city": ("the", "city"), "region": ("the", "province"), "country": ("the", "country"),
    "company": ("the", "company"), "publisher": ("the", "publisher"), "label": ("the", "label"),
    "university": ("the", "university"), "party": ("the", "party"), "team": ("the", "club"),
    "band": ("the", "band"), "film": ("the", "film"), "book": ("the", "book"), "album": ("the", "album"),
}

# --------------------------------------------------------------------------------------------
# Template compilation
# --------------------------------------------------------------------------------------------
_W, _C, _S = 0, 1, 2  # op codes: word, choice, slot
_TOKEN_RE = re.compile(r"\[[^\]]*\]|\{[^}]*\}|\S+")
_FORM_RE = re.compile(r"^([a-z])(!?)('s|\*|:[a-z]+)?$")


class _Template:
    __slots__ = ("ops", "links", "anaphor_slots", "list_slot", "extra")

    def __init__(self, text: str, links=(), extra=None):
        self.ops: list[tuple] = []
        self.anaphor_slots: set[str] = set()
        self.list_slot: str | None = None
        for tok in _TOKEN_RE.findall(text):
            if tok[0] == "[":
                self.ops.append((_C, tuple(tuple(alt.split()) for alt in tok[1:-1].split("|"))))
            elif tok[0] == "{":
                body = tok[1:-1]
                if ":" in body and body.split(":")[1] in ("city", "person", "country", "year", "num", "work"):
                    slot, need = body.split(":")  # distractor slot with a kind requirement
                    self.ops.append((_S, slot, "m"))
                    continue
                mt = _FORM_RE.match(body)
                if not mt:
                    raise ValueError(f"bad slot {tok!r} in {text!r}")
                slot, bang, form = mt.group(1), mt.group(2), mt.group(3) or ""
                if form == "'s":
                    form = "poss"
                elif form == "*":
                    form = "list"
                    self.list_slot = slot
                elif form:
                    form = form[1:]
                else:
                    form = "m"
                if bang:
                    self.anaphor_slots.add(slot)
                    form += "!"
                self.ops.append((_S, slot, form))
            else:
                self.ops.append((_W, tok))
        self.links = list(links)
        self.extra = extra  # distractors: slot -> required kind


def _compile_all():
    link_t = {kind: [_Template(t, [(kind, "a", "b")]) for t in texts] for kind, texts in _LINK_TEMPLATES.items()}
    intro_t = {kind: [_Template(t, links) for t, links in items] for kind, items in _INTRO_TEMPLATES.items()}
    distract = {}
    for kind, texts in _DISTRACTORS.items():
        out = []
        for t in texts:
            extra = dict(re.findall(r"\{([a-z]):([a-z]+)\}", t))
            out.append(_Template(t, (), extra))
        distract[kind] = out
    missing = set(LINK_FACTS) - set(link_t)
    if missing:
        raise AssertionError(f"link kinds without templates: {sorted(missing)}")
    return link_t, intro_t, distract


_LINK_T, _INTRO_T, _DISTRACT_T = _compile_all()

# --------------------------------------------------------------------------------------------
# Name pools
# --------------------------------------------------------------------------------------------
_ONSETS = ("b c d f g h j k l m n p r s t v w z b d g k l m n r s t v br dr gr kr tr st sh th ch").split()
_VOWELS = ("a e i o u a e i o a o ai ea ou ia").split()
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "x", "n", "r")
_MONTHS = ("January February March April May June July August September October November "
           "December").split()
_ADJ = ("Silver Crimson Velvet Hollow Electric Midnight Broken Golden Wild Paper Iron Neon Lonely "
        "Burning Frozen Quiet Last Hidden Distant Bitter Scarlet Amber Northern Southern Silent Endless "
        "Forgotten Restless Little Secret Wandering Glass Winter Summer Shadow Crystal Final Open "
        "Painted Sleeping").split()
_NOUN = ("Harbor River Garden Mirror Lantern Kingdom Shore Orchard Tower Letter Bridge Season Compass "
         "Island Valley Station Window Promise Voyage Echo Empire Frontier Horizon Memory Storm Citadel "
         "Meadow Ember Canyon Archive Anthem Carnival Circus Signal Labyrinth Monsoon Harvest Pilgrim "
         "Witness Stranger Daughter Engine Harbour Mountain Prophet Sailor").split()
_PLURAL = ("Crows Wolves Lanterns Engines Rivers Saints Tigers Ghosts Echoes Pilots Comets Horses "
           "Monarchs Sparrows Tides Foxes Ravens Strangers Cathedrals Satellites Arrows Hearts").split()
_GENERAL_COMPANY = {"Systems": "software company", "Industries": "manufacturing company",
                    "Group": "conglomerate", "Holdings": "holding company", "Motors": "car manufacturer",
                    "Energy": "energy company", "Foods": "food company", "Telecom": "telecommunications company",
                    "Airlines": "airline", "Bank": "bank", "Pharma": "pharmaceutical company"}
_PROFESSIONS = {  # profession -> (weight, descriptor options)
    "actor": (16, (("actor",),)),
    "director": (6, (("film", "director"),)),
    "writer": (12, (("writer",), ("novelist",), ("poet",))),
    "musician": (14, (("singer",), ("musician",), ("guitarist",), ("composer",))),
    "politician": (10, (("politician",), ("diplomat",))),
    "athlete": (10, (("footballer",), ("football", "player"))),
    "scientist": (10, (("physicist",), ("chemist",), ("biologist",), ("mathematician",), ("economist",))),
    "business": (8, (("businessman",), ("entrepreneur",), ("executive",))),
}


class _Namer:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def root(self, lo: int = 2, hi: int = 3, reserve: bool = True) -> str:
        r = self.rng
        for _ in range(1000):
            w = "".join(r.choice(_ONSETS) + r.choice(_VOWELS) for _ in range(r.randint(lo, hi))) + r.choice(_CODAS)
            if 4 <= len(w) <= 10:
                w = w.capitalize()
                if w.lower() not in self.used:
                    if reserve:
                        self.used.add(w.lower())
                    return w
        raise RuntimeError("name space exhausted")

    def unique(self, make) -> str:
        for _ in range(1000):
            name = make()
            if name.lower() not in self.used:
                self.used.add(name.lower())
                return name
        raise RuntimeError("name space exhausted")

    def free(self, name: str) -> bool:
        if name.lower() in self.used:
            return False
        self.used.add(name.lower())
        return True


def _acronym(name: str) -> str:
    return "".join(w[0] for w in name.split() if w[0].isupper())


# --------------------------------------------------------------------------------------------
# The knowledge base
# --------------------------------------------------------------------------------------------
class KnowledgeBase:
    """The hidden KB: typed entities with aliases, and links that hold one or more facts."""

    def __init__(self, seed: int, scale: float = 1.0):
        self.seed = seed
        self.names: list[str] = []
        self.aliases: list[tuple[str, ...]] = []  # noun aliases; aliases[e][0] is the full name
        self.demonym: list[str | None] = []
        self.etype: list[str] = []
        self.kind: list[str] = []
        self.noun: list[tuple[str, ...]] = []
        self.gender: list[str | None] = []
        self.alive: list[bool] = []
        self.links: list[tuple[str, int, int]] = []
        self.link_facts: list[tuple[tuple[int, str, int], ...]] = []
        self.links_of: list[list[int]] = []
        self.role_links: dict[tuple[int, str, int], list[int]] = {}
        self.pair_links: dict[tuple[int, int], list[int]] = {}  # (min, max) entity pair -> link ids
        self.by_kind: dict[str, list[int]] = {}
        self._link_key: dict[tuple[str, int, int], int] = {}
        self._facts: set[tuple[int, str, int]] = set()
        self._time: dict[str, int] = {}
        self._build(random.Random(f"dsdocre-synth-kb/{seed}"), scale)
        self.kb_ids = [f"Q{i + 1}" for i in range(len(self.names))]
        self.topics = {k: [e for e in v if len(self.links_of[e]) >= 3] for k, v in self.by_kind.items()}
        self.recent_years = [e for e in self.by_kind["time"] if " " not in self.names[e]
                             and int(self.names[e]) >= 1950]

    # -- construction -----------------------------------------------------------------------
    def _add(self, name, aliases, etype, kind, noun=(), gender=None, alive=True, demonym=None) -> int:
        e = len(self.names)
        self.names.append(name)
        self.aliases.append(tuple(aliases) if aliases else (name,))
        self.demonym.append(demonym)
        self.etype.append(etype)
        self.kind.append(kind)
        self.noun.append(tuple(noun))
        self.gender.append(gender)
        self.alive.append(alive)
        self.links_of.append([])
        self.by_kind.setdefault(kind, []).append(e)
        return e

    def _link(self, kind: str, a: int, b: int) -> int | None:
        if a == b or (kind, a, b) in self._link_key:
            return None
        facts = tuple(((a, b)[h], r, (a, b)[t]) for h, r, t in LINK_FACTS[kind])
        if any(f in self._facts for f in facts):
            return None
        lid = len(self.links)
        self.links.append((kind, a, b))
        self.link_facts.append(facts)
        self._facts.update(facts)
        self._link_key[(kind, a, b)] = lid
        self.links_of[a].append(lid)
        self.links_of[b].append(lid)
        self.role_links.setdefault((a, kind, 0), []).append(lid)
        self.role_links.setdefault((b, kind, 1), []).append(lid)
        self.pair_links.setdefault((a, b) if a < b else (b, a), []).append(lid)
        return lid

    def time_entity(self, name: str) -> int:
        e = self._time.get(name)
        if e is None:
            e = self._time[name] = self._add(name, (name,), "TIME", "time")
        return e

    def _date(self, rng, year: int) -> int:
        return self.time_entity(f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {year}")

    def _build(self, rng: random.Random, scale: float) -> None:
        nm = _Namer(rng)
        n = lambda k: max(1, int(round(k * scale)))  # noqa: E731
        # languages
        languages = []
        for _ in range(n(16)):
            name = nm.unique(lambda: nm.root(2, 2, reserve=False) + rng.choice(("ish", "ic", "ese", "i")))
            languages.append(self._add(name, (name,), "MISC", "language", ("language",)))
        # countries, regions, cities
        countries, cities_of, regions_of = [], {}, {}
        for _ in range(n(28)):
            while True:
                root = nm.root(2, 2)
                suffix, dem = rng.choice((("ia", "ian"), ("land", "landic"), ("stan", "stani"),
                                          ("ora", "oran"), ("ea", "ean")))
                name, demonym = root + suffix, root + dem
                if nm.free(name) and nm.free(demonym):
                    break
            c = self._add(name, (name,), "LOC", "country", ("country",), demonym=demonym)
            countries.append(c)
            self._link("official_language", c, rng.choice(languages))
            regions_of[c], cities_of[c] = [], []
            for _ in range(rng.randint(4, 6)):
                root = nm.root(2, 3)
                full = f"{root} {rng.choice(('Province', 'County', 'Region', 'District'))}"
                nm.free(full)
                r = self._add(full, (full, root), "LOC", "region", ("province",))
                regions_of[c].append(r)
                self._link("region_country", r, c)
                rcities = []
                for _ in range(rng.randint(3, 6)):
                    if rng.random() < 0.2:
                        prefixes = ("Port", "New", "Fort", "Saint")
                        name = nm.unique(lambda: f"{rng.choice(prefixes)} {nm.root(2, 2, False)}")
                    else:
                        name = nm.unique(lambda: nm.root(1, 2, False) + rng.choice(
                            ("ville", "burg", "ton", "stad", "haven", "ford", "mouth", "field", "wick", "")))
                    city = self._add(name, (name,), "LOC", "city", ("city",))
                    rcities.append(city)
                self._link("region_capital", rcities[0], r)
                for city in rcities[1:]:
                    self._link("city_region", city, r)
                cities_of[c].extend(rcities)
            capital = rng.choice(cities_of[c])
            for city in cities_of[c]:
                self._link("capital_country" if city == capital else "city_country", city, c)
        all_cities = [x for c in countries for x in cities_of[c]]
        country_of_city = {x: c for c in countries for x in cities_of[c]}

        def local_city(c, p=0.75):
            return rng.choice(cities_of[c]) if rng.random() < p else rng.choice(all_cities)

        def org_name(suffixes):
            root = nm.root(2, 3)
            full = f"{root} {rng.choice(suffixes)}"
            nm.free(full)
            return root, full

        # organisations
        companies, publishers, labels = [], [], []
        for kind, count, suffixes in (("company", 560, tuple(_GENERAL_COMPANY)),
                                      ("publisher", 70, ("Press", "Books", "Publishing")),
                                      ("label", 70, ("Records", "Music", "Recordings"))):
            for _ in range(n(count)):
                root, full = org_name(suffixes)
                noun = {"publisher": "publishing house", "label": "record label"}.get(
                    kind, _GENERAL_COMPANY.get(full.split()[-1], "company"))
                o = self._add(full, (full, root), "ORG", kind, noun.split())
                {"company": companies, "publisher": publishers, "label": labels}[kind].append(o)
                c = rng.choice(countries)
                self._link("hq", o, local_city(c, 1.0))
                self._link("org_country", o, c)
                if rng.random() < 0.8:
                    self._link("inception", o, self.time_entity(str(rng.randint(1850, 2015))))
        all_companies = companies + publishers + labels
        for o in all_companies:
            if rng.random() < 0.15:
                self._link("subsidiary", o, rng.choice(all_companies))
        universities = []
        for _ in range(n(150)):
            root = nm.root(2, 3)
            style = rng.random()
            if style < 0.4:
                full, aliases = f"{root} University", (f"{root} University",)
            elif style < 0.7:
                full = f"{root} Institute of Technology"
                acr = _acronym(full)
                aliases = (full, acr) if nm.free(acr) else (full,)
            else:
                full, aliases = f"University of {root}", (f"University of {root}",)
            nm.free(full)
            u = self._add(full, aliases, "ORG", "university", ("university",))
            universities.append(u)
            c = rng.choice(countries)
            self._link("uni_location", u, local_city(c, 1.0))
            self._link("org_country", u, c)
            if rng.random() < 0.7:
                self._link("inception", u, self.time_entity(str(rng.randint(1450, 1995))))
        parties_of, teams_of = {}, {}
        for c in countries:
            parties_of[c], teams_of[c] = [], []
            for _ in range(rng.randint(2, 3)):
                root, full = org_name(("Unity Party", "Labour Party", "Democratic Union", "Progressive Alliance",
                                       "People 's Party", "Green League"))
                acr = _acronym(full)
                p = self._add(full, (full, acr) if nm.free(acr) else (full,), "ORG", "party", ("political", "party"))
                parties_of[c].append(p)
                self._link("org_country", p, c)
                if rng.random() < 0.7:
                    self._link("inception", p, self.time_entity(str(rng.randint(1880, 2012))))
            for _ in range(n(5)):
                root = nm.root(2, 3)
                full = rng.choice((f"{root} United", f"{root} Rovers", f"FC {root}", f"{root} Athletic",
                                   f"Sporting {root}"))
                nm.free(full)
                t = self._add(full, (full, root), "ORG", "team", ("football", "club"))
                teams_of[c].append(t)
                self._link("org_country", t, c)
                if rng.random() < 0.7:
                    self._link("inception", t, self.time_entity(str(rng.randint(1870, 2010))))
        awards = []
        for _ in range(n(40)):
            name = nm.unique(lambda: rng.choice((f"{nm.root(2, 2, False)} Prize",
                                                 f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} Award",
                                                 f"{nm.root(2, 2, False)} Medal")))
            awards.append(self._add(name, (name,), "MISC", "award", ("award",)))
        # people
        professions = list(_PROFESSIONS)
        weights = [_PROFESSIONS[p][0] for p in professions]
        givens = {g: [nm.root(1, 2, reserve=False) + rng.choice(ends) for _ in range(250)]
                  for g, ends in (("m", ("o", "an", "ric", "us", "el", "")), ("f", ("a", "ia", "ine", "elle", "e")))}
        people, by_prof, birth_year = [], {p: [] for p in professions}, {}
        for _ in range(n(6000)):
            g = rng.choice("mf")
            surname = nm.root(2, 3)
            given = rng.choice(givens[g])
            full = f"{given} {surname}"
            nm.free(full)
            aliases = [full, surname]
            init = f"{given[0]}. {surname}"
            if rng.random() < 0.25 and nm.free(init):
                aliases.append(init)
            prof = rng.choices(professions, weights)[0]
            noun = rng.choice(_PROFESSIONS[prof][1])
            if noun == ("businessman",) and g == "f":
                noun = ("businesswoman",)
            year = rng.randint(1900, 2000)
            dead = year < 1935 or rng.random() < 0.3
            p = self._add(full, aliases, "PER", "person", noun, gender=g, alive=not dead)
            people.append(p)
            by_prof[prof].append(p)
            birth_year[p] = year
            bcity = rng.choice(all_cities)
            c = country_of_city[bcity] if rng.random() < 0.85 else rng.choice(countries)
            self._link("birth_place", p, bcity)
            self._link("birth_date", p, self._date(rng, year))
            self._link("citizenship", p, c)
            if dead:
                self._link("death_date", p, self._date(rng, min(2023, year + rng.randint(35, 95))))
                if rng.random() < 0.8:
                    self._link("death_place", p, local_city(c, 0.6))
            if rng.random() < 0.45:
                self._link("educated", p, rng.choice(universities))
            p_emp = {"scientist": 0.8, "business": 0.7}.get(prof, 0.15)
            if rng.random() < p_emp:
                pool = universities if prof == "scientist" and rng.random() < 0.7 else all_companies
                self._link("employer", p, rng.choice(pool))
            if rng.random() < (0.3 if prof in ("actor", "writer", "musician", "scientist", "director") else 0.08):
                self._link("award", p, rng.choice(awards))
            if prof == "politician":
                self._link("party", p, rng.choice(parties_of[c]))
            elif prof == "athlete":
                for t in rng.sample(teams_of[c], rng.randint(1, 2)):
                    self._link("team", p, t)
            elif prof == "musician" and rng.random() < 0.4:
                self._link("artist_label", p, rng.choice(labels))
        for i in range(0, len(people) - 1, 2):
            a, b = people[i], people[i + 1]
            if rng.random() < 0.35 and abs(birth_year[a] - birth_year[b]) < 15:
                self._link("spouse", a, b)
        by_year = sorted(people, key=lambda p: birth_year[p])
        for child in people:
            if rng.random() < 0.12:
                older = [p for p in rng.sample(by_year, 12) if 18 <= birth_year[child] - birth_year[p] <= 45]
                if older:
                    parent = older[0]
                    self._link("father" if self.gender[parent] == "m" else "mother", parent, child)
        for o in companies:
            if rng.random() < 0.6:
                self._link("founder", o, rng.choice(by_prof["business"]))
        # bands
        bands = []
        for _ in range(n(180)):
            if rng.random() < 0.75:
                name = nm.unique(lambda: f"The {rng.choice(_ADJ)} {rng.choice(_PLURAL)}")
                aliases = (name, name[4:]) if nm.free(name[4:]) else (name,)
            else:
                kinds = ("Quartet", "Collective", "Orchestra")
                name = nm.unique(lambda: f"{nm.root(2, 2, False)} {rng.choice(kinds)}")
                aliases = (name,)
            b = self._add(name, aliases, "ORG", "band", rng.choice((("rock", "band"), ("pop", "group"), ("band",))))
            bands.append(b)
            self._link("org_country", b, rng.choice(countries))
            if rng.random() < 0.8:
                self._link("inception", b, self.time_entity(str(rng.randint(1960, 2018))))
            if rng.random() < 0.6:
                self._link("artist_label", b, rng.choice(labels))
            for m in rng.sample(by_prof["musician"], rng.randint(2, 4)):
                self._link("band_member", m, b)

        def title(pattern_weights):
            def make():
                pat = rng.choices(*zip(*pattern_weights))[0]
                return pat.format(adj=rng.choice(_ADJ), noun=rng.choice(_NOUN), noun2=rng.choice(_NOUN),
                                  root=nm.root(2, 2, False))
            return nm.unique(make)

        # works
        for _ in range(n(1400)):
            name = title((("The {adj} {noun}", 4), ("{noun} of the {adj} {noun2}", 3), ("Return to {root}", 1),
                          ("{adj} {noun}", 2)))
            f = self._add(name, (name,), "MISC", "film", rng.choice(
                (("film",), ("drama", "film"), ("comedy", "film"), ("thriller", "film"), ("war", "film"))))
            self._link("director", f, rng.choice(by_prof["director"]))
            for a in rng.sample(by_prof["actor"], rng.randint(2, 4)):
                self._link("cast", f, a)
            self._link("pubdate", f, self.time_entity(str(rng.randint(1930, 2023))))
            if rng.random() < 0.7:
                self._link("work_country", f, rng.choice(countries))
            if rng.random() < 0.5:
                self._link("work_language", f, rng.choice(languages))
        notable_done = set()
        for _ in range(n(1000)):
            name = title((("The {noun} of {root}", 2), ("{adj} {noun}", 2), ("Notes on the {noun}", 1),
                          ("The {adj} {noun}", 2), ("{noun} and {noun2}", 2)))
            bk = self._add(name, (name,), "MISC", "book", rng.choice((("novel",), ("novel",), ("poetry", "collection"),
                                                                     ("short", "story", "collection"))))
            w = rng.choice(by_prof["writer"])
            if w not in notable_done and rng.random() < 0.5:
                notable_done.add(w)
                self._link("author_notable", bk, w)
            else:
                self._link("author", bk, w)
            if rng.random() < 0.6:
                self._link("publisher", bk, rng.choice(publishers))
            if rng.random() < 0.8:
                self._link("pubdate", bk, self.time_entity(str(rng.randint(1850, 2023))))
            if rng.random() < 0.4:
                self._link("work_language", bk, rng.choice(languages))
        for _ in range(n(700)):
            name = title((("{adj} {noun}", 3), ("{noun}", 1), ("{noun} in {root}", 1), ("{adj} {noun}s", 1)))
            noun = rng.choice((("album",), ("studio", "album"), ("live", "album")))
            al = self._add(name, (name,), "MISC", "album", noun)
            self._link("performer", al, rng.choice(bands) if rng.random() < 0.5 else rng.choice(by_prof["musician"]))
            if rng.random() < 0.85:
                self._link("pubdate", al, self.time_entity(str(rng.randint(1960, 2023))))
            if rng.random() < 0.6:
                self._link("album_label", al, rng.choice(labels))
        # numbers (distractors only; no facts)
        for _ in range(n(400)):
            name = nm.unique(lambda: f"{rng.randint(2, 950) * 1000 + rng.choice((0, 0, 500, 250)):,}")
            self._add(name, (name,), "NUM", "number")

    # -- views --------------------------------------------------------------------------------
    def links_with_role(self, e: int, kind: str, role: int) -> list[int]:
        return self.role_links.get((e, kind, role), [])

    def relations(self) -> list[str]:
        rels = {r for facts in LINK_FACTS.values() for _, r, _ in facts}
        return [r for r in relation_names() if r in rels]

    def to_json(self) -> dict:
        ents = {}
        for e, kb_id in enumerate(self.kb_ids):
            aliases = list(self.aliases[e]) + ([self.demonym[e]] if self.demonym[e] else [])
            ents[kb_id] = {"name": self.names[e], "aliases": aliases, "type": self.etype[e], "kind": self.kind[e]}
        facts = [[self.kb_ids[h], r, self.kb_ids[t]] for fs in self.link_facts for h, r, t in fs]
        return {"entities": ents, "facts": facts}


_KB_CACHE: dict[tuple[int, float], KnowledgeBase] = {}


def get_kb(seed: int, scale: float = 1.0) -> KnowledgeBase:
    """The KB of a seed (cached: building it takes a fraction of a second)."""
    key = (seed, scale)
    kb = _KB_CACHE.get(key)
    if kb is None:
        if len(_KB_CACHE) > 4:
            _KB_CACHE.clear()
        kb = _KB_CACHE[key] = KnowledgeBase(seed, scale)
    return kb


# --------------------------------------------------------------------------------------------
# Document generation
# --------------------------------------------------------------------------------------------
_TOPIC_KINDS = (("person", 44), ("company", 9), ("film", 12), ("book", 8), ("album", 5), ("city", 7),
                ("region", 2), ("country", 2), ("university", 3), ("team", 2), ("band", 3), ("party", 1),
                ("publisher", 1), ("label", 1))
_TOPIC_NAMES, _TOPIC_WEIGHTS = zip(*_TOPIC_KINDS)
_MAX_SENTS_BASE = 10
_P_TOPIC_ANAPHOR = 0.7
_GEO_KINDS = frozenset(("capital_country", "region_country", "city_region", "region_capital", "city_country"))
_P_HOP_ANAPHOR = 0.55


class _DocBuilder:
    """One document under construction. Sentences have internal ids (creation order) and a
    display order (``seq``) so that sentences can be inserted without renumbering evidence."""

    def __init__(self, kb: KnowledgeBase, rng: random.Random):
        self.kb = kb
        self.rng = rng
        self.sents: list[list[str]] = []
        self.needs_prev: list[bool] = []  # the sentence uses a nominal anaphor for the previous one
        self.seq: list[int] = []
        self.mentions: dict[int, list[tuple[int, int, int, str]]] = {}  # entity -> (sid, start, end, name)
        self.last_explicit: dict[int, int] = {}
        self.sent_entities: list[list[int]] = []
        self.stated: dict[tuple[int, str, int], tuple[int, ...]] = {}
        self.stated_links: set[int] = set()
        self.topic = -1
        self.distracted: set[int] = set()

    # -- rendering ----------------------------------------------------------------------------
    def _alias(self, e: int, adj: bool = False) -> str:
        kb = self.kb
        if adj and kb.demonym[e]:
            return kb.demonym[e]
        al = kb.aliases[e]
        if len(al) == 1 or e not in self.mentions:
            return al[0]
        return al[0] if self.rng.random() < 0.35 else self.rng.choice(al[1:])

    def _anaphor_words(self, e: int, poss: bool, first: bool) -> list[str]:
        kb = self.kb
        if kb.etype[e] == "PER":
            w = ("his" if poss else "he") if kb.gender[e] == "m" else ("her" if poss else "she")
            words = [w]
        elif poss:
            words = ["its"]
        else:
            words = list(_NOMINAL.get(kb.kind[e], ("it",)))
        if first:
            words[0] = words[0].capitalize()
        return words

    def render(self, tpl: _Template, bind: dict, anaphor: str | None = None, position: int | None = None,
               needs_prev: bool = False) -> int:
        """Write one sentence; returns its internal id."""
        kb, rng = self.kb, self.rng
        sid = len(self.sents)
        toks: list[str] = []
        ments: list[tuple[int, int, int, str]] = []

        def mention(e: int, adj: bool = False) -> None:
            name = self._alias(e, adj)
            words = name.split(" ")
            ments.append((e, len(toks), len(toks) + len(words), name))
            toks.extend(words)

        for op in tpl.ops:
            code = op[0]
            if code == _W:
                toks.append(op[1])
            elif code == _C:
                toks.extend(rng.choice(op[1]))
            else:
                slot, form = op[1], op[2]
                e = bind[slot]
                if form == "m" or form == "m!":
                    if form == "m!" and slot == anaphor:
                        toks.extend(self._anaphor_words(e, False, not toks))
                    else:
                        mention(e)
                elif form == "poss" or form == "poss!":
                    if form == "poss!" and slot == anaphor:
                        toks.extend(self._anaphor_words(e, True, not toks))
                    else:
                        mention(e)
                        toks.append("'s")
                elif form == "adj":
                    mention(e, adj=True)
                elif form == "list":
                    for i, x in enumerate(e):
                        if i:
                            toks.append("and" if i == len(e) - 1 else ",")
                        mention(x)
                elif form == "noun":
                    toks.extend(kb.noun[e])
                elif form == "is":
                    toks.append("is" if kb.alive[e] else "was")
                elif form == "has":
                    toks.append("has" if kb.alive[e] else "had")
                elif form == "he":
                    toks.extend(self._anaphor_words(e, False, not toks) if kb.etype[e] == "PER" else ["it"])
                elif form == "his":
                    toks.extend(self._anaphor_words(e, True, not toks))
                elif form == "child":
                    toks.append("son" if kb.gender[e] == "m" else "daughter")
                elif form == "spouse":
                    toks.append("husband" if kb.gender[e] == "m" else "wife")
                else:  # pragma: no cover - guarded by compilation
                    raise ValueError(form)
        # "a" -> "an" before a vowel (pattern words only, never inside a mention)
        inside = {i for _, s, t, _ in ments for i in range(s, t)}
        for i in range(len(toks) - 1):
            if toks[i] in ("a", "A") and toks[i + 1][:1] in "AEIOUaeiou" and i not in inside:
                toks[i] += "n"
        self.sents.append(toks)
        self.needs_prev.append(needs_prev)
        ents = []
        for e, s, t, name in ments:
            self.mentions.setdefault(e, []).append((sid, s, t, name))
            ents.append(e)
        self.sent_entities.append(ents)
        if position is None:
            self.seq.append(sid)
            for e in ents:
                self.last_explicit[e] = sid
        else:
            self.seq.insert(position, sid)
        return sid

    # -- stating links ------------------------------------------------------------------------
    def _bind(self, tpl: _Template, fixed: dict) -> tuple[dict, list[int]] | None:
        kb, rng = self.kb, self.rng
        bind = dict(fixed)
        lids: list[int] = []
        for kind, x, y in tpl.links:
            ex, ey = bind.get(x), bind.get(y)
            if ex is not None and ey is not None:
                lid = kb._link_key.get((kind, ex, ey))
                if lid is None or lid in self.stated_links:
                    return None
            elif ex is not None or ey is not None:
                known, role = (ex, 0) if ex is not None else (ey, 1)
                cands = [lid for lid in kb.links_with_role(known, kind, role) if lid not in self.stated_links]
                if not cands:
                    return None
                if y == tpl.list_slot:
                    picks = rng.sample(cands, min(len(cands), rng.randint(1, 3)))
                    bind[y] = [kb.links[lid][2] for lid in picks]
                    lids.extend(picks)
                    continue
                lid = rng.choice(cands)
                bind[y if ex is not None else x] = kb.links[lid][2 if ex is not None else 1]
            else:
                return None
            lids.append(lid)
        flat = [v for val in bind.values() for v in (val if isinstance(val, list) else (val,))]
        if len(set(flat)) != len(flat):
            return None
        return bind, lids

    def _record(self, lids: list[int], sid: int, anaphor_entity: int | None, antecedent: int | None) -> None:
        for lid in lids:
            self.stated_links.add(lid)
            for fact in self.kb.link_facts[lid]:
                if fact in self.stated:
                    continue
                ev = {sid}
                if anaphor_entity is not None and anaphor_entity in (fact[0], fact[2]) and antecedent is not None:
                    ev.add(antecedent)
                self.stated[fact] = tuple(sorted(ev))

    def state_link(self, lid: int, focus: int | None = None, p_anaphor: float = 0.0, hop: bool = False,
                   position: int | None = None, allow_list: bool = True) -> None:
        """State one link (with a list pattern, up to two more links of the same kind and owner).
        With probability ``p_anaphor`` the focus entity is referred to by an anaphor (not a mention)."""
        kb, rng = self.kb, self.rng
        kind, a, b = kb.links[lid]
        slot = "a" if focus == a else "b" if focus == b else None
        usable = [t for t in _LINK_T[kind] if t.list_slot is None or (allow_list and t.list_slot != slot)]
        want = slot is not None and rng.random() < p_anaphor and self._can_refer(focus, hop)
        if want:
            ana = [t for t in usable if slot in t.anaphor_slots]
            if ana:
                usable = ana
            else:
                want = False
        tpl = rng.choice(usable)
        lids = [lid]
        if tpl.list_slot is not None:
            owner_slot = "b" if tpl.list_slot == "a" else "a"
            role = 0 if owner_slot == "a" else 1
            owner = a if role == 0 else b
            others = [x for x in kb.links_with_role(owner, kind, role) if x != lid and x not in self.stated_links]
            lids += rng.sample(others, min(len(others), rng.randint(0, 2)))
            bind = {owner_slot: owner, tpl.list_slot: [kb.links[x][2 - role] for x in lids]}
        else:
            bind = {"a": a, "b": b}
        anaphor = slot if want else None
        antecedent = self.last_explicit.get(focus) if want else None
        sid = self.render(tpl, bind, anaphor, position=position, needs_prev=want and hop)
        self._record(lids, sid, focus if want else None, antecedent)

    def _can_refer(self, e: int, hop: bool) -> bool:
        if e not in self.last_explicit:
            return False
        if not hop:
            return True
        # nominal anaphor: the entity is in the previous sentence, alone of its kind there
        if not self.seq or self.last_explicit[e] != self.seq[-1] or self.kb.kind[e] not in _NOMINAL:
            return False
        kinds = [self.kb.kind[x] for x in self.sent_entities[self.seq[-1]]]
        return kinds.count(self.kb.kind[e]) == 1

    # -- distractors --------------------------------------------------------------------------
    def _random_of(self, need: str, avoid: set) -> int | None:
        kb, rng = self.kb, self.rng
        pool = {"city": "city", "person": "person", "country": "country", "num": "number"}.get(need)
        for _ in range(6):
            if need == "year":
                e = rng.choice(kb.recent_years)
            elif need == "work":
                e = rng.choice(kb.by_kind[rng.choice(("film", "book", "album"))])
            else:
                e = rng.choice(kb.by_kind[pool])
            if e not in avoid:
                return e
        return None

    def distractor(self, x: int, position: int | None = None, alone: bool = False,
                   avoid_related: bool = True) -> bool:
        """A sentence mentioning ``x`` (and maybe new, unrelated entities) that states nothing."""
        kb, rng = self.kb, self.rng
        key = kb.kind[x] if kb.kind[x] in _DISTRACT_T else kb.etype[x]
        if key == "TIME" and " " in kb.names[x]:
            key = "date"
        if key not in _DISTRACT_T:
            return False
        cands = [t for t in _DISTRACT_T[key] if not (alone and t.extra)]
        if not cands:
            return False
        tpl = rng.choice(cands)
        bind = {"x": x}
        avoid = set(self.mentions) | {x}
        for slot, need in tpl.extra.items():
            e = self._random_of(need, avoid)
            if e is None:
                return False
            if avoid_related and self.related(e, avoid):
                return False  # new distractor entities hold no KB fact with the document's (NA pairs)
            bind[slot] = e
            avoid.add(e)
        if position is None:
            position = self.insert_position(self.first_pos(x) + 1 if x in self.mentions else 1)
        self.distracted.add(x)
        self.render(tpl, bind, None, position=position)
        return True

    def related(self, e: int, ents) -> bool:
        pl = self.kb.pair_links
        return any(((e, d) if e < d else (d, e)) in pl for d in ents if d != e)

    def first_pos(self, e: int) -> int:
        """Display position of the first sentence that mentions ``e``."""
        sids = {m[0] for m in self.mentions[e]}
        return min(i for i, sid in enumerate(self.seq) if sid in sids)

    def insert_position(self, lo: int = 1) -> int:
        """A random display position >= ``lo`` (>= 1) that does not split a nominal anaphor."""
        n = len(self.seq)
        valid = [p for p in range(max(lo, 1), n + 1) if p == n or not self.needs_prev[self.seq[p]]]
        return self.rng.choice(valid)

    # -- document plan ------------------------------------------------------------------------
    def build(self, topic: int, max_sents: int, max_ents: int) -> None:
        kb, rng = self.kb, self.rng
        self.topic = topic
        # opening sentence
        intros = _INTRO_T.get(kb.kind[topic], [])
        done = False
        for i in rng.sample(range(len(intros)), len(intros)):
            got = self._bind(intros[i], {"a": topic})
            if got is not None:
                bind, lids = got
                sid = self.render(intros[i], bind)
                self._record(lids, sid, None, None)
                done = True
                break
        if not done:
            self.render(_Template("{a} is a {a:noun} ."), {"a": topic})
        # facts about the topic, with second hops
        n_topic = rng.randint(2, 5)
        n_dis = rng.randint(1, 2)
        cand = list(kb.links_of[topic])
        if len(cand) > 24:
            cand = rng.sample(cand, 24)
        else:
            rng.shuffle(cand)
        told = 0
        for lid in cand:
            if told >= n_topic or len(self.seq) >= max_sents - n_dis:
                break
            if lid in self.stated_links:
                continue
            _, a, b = kb.links[lid]
            other = b if a == topic else a
            if other not in self.mentions and len(self.mentions) >= max_ents:
                continue
            self.state_link(lid, focus=topic, p_anaphor=_P_TOPIC_ANAPHOR)
            told += 1
            if (kb.etype[other] in ("TIME", "NUM") or rng.random() > 0.45
                    or len(self.seq) >= max_sents - n_dis):
                continue
            hops = [x for x in kb.links_of[other] if x not in self.stated_links
                    and topic not in kb.links[x][1:]]
            if len(hops) > 12:
                hops = rng.sample(hops, 12)
            geo = [x for x in kb.links_of[other] if kb.links[x][0] in _GEO_KINDS and kb.links[x][1] == other
                   and x not in self.stated_links and topic not in kb.links[x][1:]]
            if geo and rng.random() < 0.6:
                # a place is most often followed by where it lies ("... a town in X , Y")
                hops = rng.sample(geo, len(geo)) + hops
            for x in hops:
                _, a2, b2 = kb.links[x]
                far = b2 if a2 == other else a2
                if far in self.mentions or len(self.mentions) < max_ents:
                    self.state_link(x, focus=other, p_anaphor=_P_HOP_ANAPHOR, hop=True)
                    break
        # distractor sentences
        for _ in range(n_dis):
            ents = [e for e in self.mentions if kb.etype[e] != "NUM" and e not in self.distracted]
            if not ents:
                break
            x = rng.choice(ents)
            if len(self.mentions) < max_ents and rng.random() < 0.4:
                # a new entity, unrelated in the KB to the document's entities
                pool = kb.by_kind[rng.choice(("city", "person", "company", "film", "award"))]
                y = rng.choice(pool)
                if y not in self.mentions and not self.related(y, self.mentions):
                    x = y
            self.distractor(x)
        # at least 4 sentences and 4 entities: pad with distractors about unrelated entities
        for _ in range(12):
            if len(self.seq) >= 4 and len(self.mentions) >= 4:
                break
            y = rng.choice(kb.by_kind[rng.choice(("city", "person", "company", "film", "award"))])
            if y not in self.mentions and not self.related(y, self.mentions):
                self.distractor(y)

    # -- DS noise control ---------------------------------------------------------------------
    def _inter_counts(self) -> tuple[int, int, list[int]]:
        """(stated inter facts, unstated inter facts, links of the unstated inter pairs)."""
        facts, lids = self.kb_facts()
        sents = self._sent_sets()
        stated_inter = noise_inter = 0
        for h, r, t in facts:
            if sents[h] & sents[t]:
                continue
            if (h, r, t) in self.stated:
                stated_inter += 1
            else:
                noise_inter += 1
        return stated_inter, noise_inter, lids

    def _sent_sets(self) -> dict[int, set[int]]:
        return {e: {m[0] for m in ms} for e, ms in self.mentions.items()}

    def kb_facts(self) -> tuple[list[tuple[int, str, int]], list[int]]:
        """Every KB fact between two entities of the document, and the links holding them."""
        kb = self.kb
        pl = kb.pair_links
        ents = sorted(self.mentions)
        lids: list[int] = []
        for i, x in enumerate(ents):
            for y in ents[i + 1:]:
                got = pl.get((x, y))
                if got:
                    lids.extend(got)
        lids.sort()
        return [f for lid in lids for f in kb.link_facts[lid]], lids

    def control_noise(self, rate: float, max_extra: int = 6) -> None:
        rng = self.rng
        rate = min(max(rate, 0.0), 0.95)
        stated_inter, noise_inter, _ = self._inter_counts()
        target = math.floor(rate / (1.0 - rate) * stated_inter + rng.random())
        for _ in range(max_extra):
            if noise_inter == target:
                break
            if noise_inter < target:
                ok = self._add_noise(target - noise_inter)
            else:
                ok = self._remove_noise(noise_inter - target)
            if not ok:
                break
            stated_inter, noise_inter, _ = self._inter_counts()

    def _add_noise(self, want: int) -> bool:
        """Mention, alone in a distractor sentence, an entity with unstated KB facts to the document."""
        kb, rng = self.kb, self.rng
        doc = self.mentions
        best, best_gap = None, None
        # entities with unstated facts to the topic first, to the others next, to time points last
        others = [e for e in doc if e != self.topic and kb.etype[e] != "TIME"]
        times = [e for e in doc if kb.etype[e] == "TIME"]
        ents = [self.topic] + rng.sample(others, len(others)) + rng.sample(times, len(times))
        tries = 0
        for e in ents:
            links = kb.links_of[e]
            for lid in (rng.sample(links, 8) if len(links) > 8 else links):
                _, a, b = kb.links[lid]
                z = b if a == e else a
                if z in doc or kb.etype[z] == "NUM":
                    continue
                tries += 1
                pl = kb.pair_links
                count = sum(len(kb.link_facts[x]) for d in doc for x in pl.get((z, d) if z < d else (d, z), ()))
                gap = abs(want - count) + (0.5 if count > want else 0)
                if best_gap is None or gap < best_gap:
                    best, best_gap = z, gap
                if best_gap == 0 or tries >= 16:
                    break
            if best_gap == 0 or tries >= 16:
                break
        if best is None:
            return False
        return self.distractor(best, position=self.insert_position(), alone=True, avoid_related=False)

    def _remove_noise(self, excess: int) -> bool:
        """State an unstated inter-sentence link with both entities in one sentence."""
        kb, rng = self.kb, self.rng
        sents = self._sent_sets()
        _, lids = self.kb_facts()
        pair_facts: dict[tuple[int, int], list[int]] = {}
        for lid in lids:
            _, a, b = kb.links[lid]
            pair_facts.setdefault((min(a, b), max(a, b)), []).append(lid)
        best, best_gap = None, None
        for (a, b), plids in pair_facts.items():
            if sents[a] & sents[b]:
                continue
            if any(f in self.stated for lid in plids for f in kb.link_facts[lid]):
                continue
            count = sum(len(kb.link_facts[lid]) for lid in plids)
            gap = abs(excess - count) + (0.5 if count > excess else 0)
            if best_gap is None or gap < best_gap:
                best, best_gap = plids, gap
        if best is None:
            return False
        lid = rng.choice(best)
        _, a, b = kb.links[lid]
        self.state_link(lid, position=self.insert_position(max(self.first_pos(a), self.first_pos(b)) + 1),
                        allow_list=False)
        return True

    # -- output -------------------------------------------------------------------------------
    def finish(self, title: str, distant: bool) -> tuple[dict, dict]:
        kb = self.kb
        pos_of = {sid: i for i, sid in enumerate(self.seq)}
        sents = [self.sents[sid] for sid in self.seq]
        order = sorted(self.mentions, key=lambda e: min((pos_of[m[0]], m[1]) for m in self.mentions[e]))
        index = {e: i for i, e in enumerate(order)}
        vertex_set = []
        sent_sets = []
        for e in order:
            ms = sorted((pos_of[sid], s, t, name) for sid, s, t, name in self.mentions[e])
            typ, kb_id = kb.etype[e], kb.kb_ids[e]
            vertex_set.append([{"name": name, "pos": [s, t], "sent_id": si, "type": typ, "kb_id": kb_id}
                               for si, s, t, name in ms])
            sent_sets.append({m[0] for m in ms})
        facts, _ = self.kb_facts()
        stated, noise = [], []
        for h, r, t in facts:
            key = (index[h], index[t], r)
            (stated if (h, r, t) in self.stated else noise).append(key)
        stated.sort()
        noise.sort()
        ev = {(index[h], index[t], r): sorted(pos_of[s] for s in sids) for (h, r, t), sids in self.stated.items()}
        if distant:
            labels = [{"h": h, "t": t, "r": r, "evidence": []} for h, t, r in sorted(stated + noise)]
        else:
            labels = [{"h": h, "t": t, "r": r, "evidence": ev[(h, t, r)]} for h, t, r in stated]
        doc = {"title": title, "sents": sents, "vertexSet": vertex_set, "labels": labels}
        meta = {"stated": stated, "noise": noise, "evidence": ev, "sent_sets": sent_sets}
        return doc, meta


def _make_document(kb: KnowledgeBase, split: str, seed: int, index: int, noise_rate: float) -> tuple[dict, dict]:
    rng = random.Random(f"{seed}/{split}/{index}")
    kind = rng.choices(_TOPIC_NAMES, _TOPIC_WEIGHTS)[0]
    topic = rng.choice(kb.topics[kind])
    b = _DocBuilder(kb, rng)
    b.build(topic, max_sents=rng.randint(5, _MAX_SENTS_BASE), max_ents=rng.randint(5, 12))
    distant = split == "train_distant"
    if distant:
        b.control_noise(noise_rate)
    title = f"{kb.names[topic]} ({' '.join(kb.noun[topic])}) [{_SPLIT_TAG[split]}-{index}]"
    return b.finish(title, distant)


def _canonical_split(kind: str) -> str:
    split = _SPLIT_ALIAS.get(kind, kind)
    if split not in SPLITS:
        raise ValueError(f"unknown document set {kind!r}: use one of {', '.join(SPLITS)}")
    return split


def iter_documents(kind: str, seed: int, count: int, *, start: int = 0, noise_rate: float = 0.6,
                   kb: KnowledgeBase | None = None, with_meta: bool = False) -> Iterator:
    """Documents ``start .. start+count-1`` of one set (``train_annotated``, ``dev``, ``test`` or
    ``train_distant``; ``annotated`` / ``distant`` are accepted too). Each is a DocRED dict; with
    ``with_meta`` a ``(doc, meta)`` pair where ``meta["stated"]`` / ``meta["noise"]`` list the
    ``(h, t, r)`` KB facts between the document's entities that the text states / does not state,
    ``meta["evidence"]`` maps each stated ``(h, t, r)`` to its evidence sentences (also for the DS
    set, whose labels carry none) and ``meta["sent_sets"][i]`` is the set of sentences mentioning
    entity ``i``.
    Document ``i`` depends only on ``(seed, kind, i)``: any range can be generated independently."""
    split = _canonical_split(kind)
    kb = kb if kb is not None else get_kb(seed)
    for i in range(start, start + count):
        doc, meta = _make_document(kb, split, seed, i, noise_rate)
        yield (doc, meta) if with_meta else doc


# --------------------------------------------------------------------------------------------
# Statistics and writing
# --------------------------------------------------------------------------------------------
class _SplitStats:
    def __init__(self, distant: bool):
        self.distant = distant
        self.c = dict(docs=0, sentences=0, words=0, entities=0, mentions=0, labels=0, intra_labels=0,
                      inter_labels=0, entity_pairs=0, labelled_pairs=0, multi_label_pairs=0)
        if distant:
            self.c.update(stated=0, noise=0, stated_intra=0, stated_inter=0, noise_intra=0, noise_inter=0)

    def add(self, doc: dict, meta: dict) -> None:
        c = self.c
        n = len(doc["vertexSet"])
        c["docs"] += 1
        c["sentences"] += len(doc["sents"])
        c["words"] += sum(len(s) for s in doc["sents"])
        c["entities"] += n
        c["mentions"] += sum(len(v) for v in doc["vertexSet"])
        c["entity_pairs"] += n * (n - 1)
        ss = meta["sent_sets"]
        pairs: dict[tuple[int, int], int] = {}
        for lab in doc["labels"]:
            h, t = lab["h"], lab["t"]
            pairs[(h, t)] = pairs.get((h, t), 0) + 1
            c["labels"] += 1
            c["intra_labels" if ss[h] & ss[t] else "inter_labels"] += 1
        c["labelled_pairs"] += len(pairs)
        c["multi_label_pairs"] += sum(1 for v in pairs.values() if v > 1)
        if self.distant:
            for key, facts in (("stated", meta["stated"]), ("noise", meta["noise"])):
                for h, t, _ in facts:
                    c[key] += 1
                    c[f"{key}_intra" if ss[h] & ss[t] else f"{key}_inter"] += 1

    def result(self) -> dict:
        c = dict(self.c)
        d = max(c["docs"], 1)
        out = dict(c)
        out["per_doc"] = {k: round(c[k] / d, 2) for k in ("sentences", "entities", "mentions", "labels")}
        out["inter_fraction"] = round(c["inter_labels"] / max(c["labels"], 1), 4)
        out["na_pair_fraction"] = round(1 - c["labelled_pairs"] / max(c["entity_pairs"], 1), 4)
        if self.distant:
            out["noise_rate_inter"] = round(c["noise_inter"] / max(c["stated_inter"] + c["noise_inter"], 1), 4)
            out["noise_rate_intra"] = round(c["noise_intra"] / max(c["stated_intra"] + c["noise_intra"], 1), 4)
            out["noise_rate"] = round(c["noise"] / max(c["labels"], 1), 4)
        return out


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def generate_corpus(out_dir, num_docs: int, seed: int, noise_rate: float = 0.6, dev_docs: int | None = None,
                    test_docs: int | None = None, distant_docs: int | None = None, progress: bool = True) -> dict:
    """Write the corpus (see the module docstring) to ``out_dir``; returns the statistics
    (also written to ``stats.json``)."""
    if num_docs < 0:
        raise ValueError("num_docs must be >= 0")
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError("noise_rate must be in [0, 1)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev_n = max(50, num_docs // 5) if dev_docs is None else dev_docs
    counts = {"train_annotated": num_docs, "dev": dev_n, "test": dev_n if test_docs is None else test_docs,
              "train_distant": num_docs if distant_docs is None else distant_docs}
    t0 = time.time()
    kb = get_kb(seed)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(counts.values()), desc="synth", unit="doc", file=sys.stderr,
                   disable=sum(counts.values()) < 2000, mininterval=0.5 if sys.stderr.isatty() else 15.0)
    files = {"train_annotated": "train_annotated.json", "dev": "dev.json", "test": "test.json",
             "train_distant": "train_distant.json"}
    split_stats = {}
    for split in SPLITS:
        st = _SplitStats(split == "train_distant")
        truth = open(out / "train_distant_truth.jsonl", "w", encoding="utf-8") if st.distant else None
        with open(out / files[split], "w", encoding="utf-8") as fh:
            fh.write("[")
            for i, (doc, meta) in enumerate(iter_documents(split, seed, counts[split], noise_rate=noise_rate,
                                                           kb=kb, with_meta=True)):
                fh.write(("\n" if i == 0 else ",\n") + _dumps(doc))
                st.add(doc, meta)
                if truth is not None:
                    truth.write(_dumps({"title": doc["title"], "stated": [list(x) for x in meta["stated"]],
                                        "noise": [list(x) for x in meta["noise"]]}) + "\n")
                if bar is not None:
                    bar.update(1)
            fh.write("\n]\n")
        if truth is not None:
            truth.close()
        split_stats[split] = st.result()
    if bar is not None:
        bar.close()
    with open(out / "kb.json", "w", encoding="utf-8") as fh:
        fh.write(_dumps(kb.to_json()))
        fh.write("\n")
    ds = split_stats["train_distant"]
    stats = {
        "seed": seed,
        "noise_rate_target": noise_rate,
        "noise_rate_inter": ds["noise_rate_inter"],
        "files": {s: files[s] for s in SPLITS} | {"truth": "train_distant_truth.jsonl", "kb": "kb.json"},
        "splits": split_stats,
        "kb": {"entities": len(kb.names), "facts": sum(len(f) for f in kb.link_facts), "links": len(kb.links),
               "relations": kb.relations()},
    }
    with open(out / "stats.json", "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=2)
        fh.write("\n")
    stats["elapsed_s"] = round(time.time() - t0, 2)  # returned, not written: the files stay reproducible
    return stats


# --------------------------------------------------------------------------------------------
# CLI hooks (dispatched by dsdocre.cli)
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", type=int, default=1000,
                        help="annotated training documents to write (train_annotated.json) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the hidden KB and of every document; same arguments -> identical files "
                             "(default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--noise-rate", type=float, default=0.6,
                        help="target fraction of the inter-sentence distant labels that are noise, i.e. KB facts "
                             "the text does not state (default: %(default)s)")
    parser.add_argument("--dev-docs", type=int, default=None,
                        help="documents in dev.json, with labels (default: max(50, docs // 5))")
    parser.add_argument("--test-docs", type=int, default=None,
                        help="documents in test.json, with labels (default: same as --dev-docs)")
    parser.add_argument("--distant-docs", type=int, default=None,
                        help="distantly supervised documents in train_distant.json (default: --docs)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args: argparse.Namespace) -> int:
    stats = generate_corpus(args.out, args.docs, args.seed, noise_rate=args.noise_rate, dev_docs=args.dev_docs,
                            test_docs=args.test_docs, distant_docs=args.distant_docs,
                            progress=not getattr(args, "no_progress", False))
    sp = stats["splits"]
    print(f"wrote {args.out} in {stats['elapsed_s']:.1f}s (seed {stats['seed']}; KB: {stats['kb']['entities']} "
          f"entities, {stats['kb']['facts']} facts, {len(stats['kb']['relations'])} relations)")
    for split in SPLITS:
        s = sp[split]
        line = (f"  {split:<16} {s['docs']:>7} docs  {s['labels']:>8} labels  "
                f"inter {s['inter_fraction']:.0%}  NA pairs {s['na_pair_fraction']:.0%}")
        if split == "train_distant":
            line += f"  noise (inter) {s['noise_rate_inter']:.3f} (target {stats['noise_rate_target']})"
        print(line)
    return 0
