"""The hidden knowledge base of the synthetic corpus: link kinds and the facts they hold
(``LINK_FACTS``), the name pools and :class:`_Namer` that make entity names, :class:`KnowledgeBase`
(built deterministically from a seed) and the cached :func:`get_kb`."""

from __future__ import annotations

import random

from dsdocre.relations import relation_names

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


def clear_kb_cache() -> None:
    """Forget the cached KBs: the next :func:`get_kb` builds its KB again (a test of determinism
    wants the KB rebuilt, not reused)."""
    _KB_CACHE.clear()
