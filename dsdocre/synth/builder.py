"""Document generation: :class:`_DocBuilder` writes one document from the KB and the sentence
patterns (facts about a topic, second hops, distractors, DS noise control); :func:`iter_documents`
yields any range of documents of a set, each a pure function of ``(seed, set, index)``."""

from __future__ import annotations

import math
import random
from typing import Iterator

from dsdocre.synth.kb import KnowledgeBase, get_kb
from dsdocre.synth.splits import SPLIT_TAG, canonical_split
from dsdocre.synth.templates import (CHOICE, DISTRACTOR_TEMPLATES, INTRO_TEMPLATES, LINK_TEMPLATES, NOMINAL_ANAPHORS,
                                     WORD, Template)

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
            words = list(NOMINAL_ANAPHORS.get(kb.kind[e], ("it",)))
        if first:
            words[0] = words[0].capitalize()
        return words

    def render(self, tpl: Template, bind: dict, anaphor: str | None = None, position: int | None = None,
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
            if code == WORD:
                toks.append(op[1])
            elif code == CHOICE:
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
    def _bind(self, tpl: Template, fixed: dict) -> tuple[dict, list[int]] | None:
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
        usable = [t for t in LINK_TEMPLATES[kind] if t.list_slot is None or (allow_list and t.list_slot != slot)]
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
        if not self.seq or self.last_explicit[e] != self.seq[-1] or self.kb.kind[e] not in NOMINAL_ANAPHORS:
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
        key = kb.kind[x] if kb.kind[x] in DISTRACTOR_TEMPLATES else kb.etype[x]
        if key == "TIME" and " " in kb.names[x]:
            key = "date"
        if key not in DISTRACTOR_TEMPLATES:
            return False
        cands = [t for t in DISTRACTOR_TEMPLATES[key] if not (alone and t.extra)]
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
        intros = INTRO_TEMPLATES.get(kb.kind[topic], [])
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
            self.render(Template("{a} is a {a:noun} ."), {"a": topic})
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
    title = f"{kb.names[topic]} ({' '.join(kb.noun[topic])}) [{SPLIT_TAG[split]}-{index}]"
    return b.finish(title, distant)

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
    split = canonical_split(kind)
    kb = kb if kb is not None else get_kb(seed)
    for i in range(start, start + count):
        doc, meta = _make_document(kb, split, seed, i, noise_rate)
        yield (doc, meta) if with_meta else doc
