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

Modules
-------
``kb``         link kinds (``LINK_FACTS``), name pools, :class:`KnowledgeBase`, :func:`get_kb`
``templates``  sentence patterns (link, opening, distractor) and their compilation
``splits``     the four document sets and their aliases
``builder``    the document builder and :func:`iter_documents`
``corpus``     statistics and :func:`generate_corpus` (the files above)
``command``    the ``dsdocre synth`` command (``add_arguments`` / ``run``)
"""

from __future__ import annotations

from dsdocre.synth.builder import iter_documents
from dsdocre.synth.corpus import generate_corpus
from dsdocre.synth.kb import LINK_FACTS, KnowledgeBase, clear_kb_cache, get_kb
from dsdocre.synth.splits import SPLITS

__all__ = ["KnowledgeBase", "generate_corpus", "iter_documents", "add_arguments", "run", "SPLITS", "get_kb",
           "clear_kb_cache", "LINK_FACTS"]
