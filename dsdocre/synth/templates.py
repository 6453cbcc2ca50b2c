"""Sentence patterns of the synthetic corpus (per link kind, opening sentences per topic kind,
distractors, nominal anaphors) and their compilation into :class:`Template` op lists."""

from __future__ import annotations

import re

from dsdocre.synth.kb import LINK_FACTS

# Sentence patterns. Slots: {a} {b} {c} {d} mention an entity; "!" marks a slot that may be
# realised as an anaphor (pronoun / nominal, not a mention) when it holds the focus entity;
# {a's} / {a!'s} possessive; {b:adj} the demonym; {a:noun} a descriptor ("actor", "drama film");
# {a:is} is/was, {a:has} has/had, {a:he}, {a:his} pronouns, {b:child} son/daughter,
# {b:spouse} husband/wife; {b*} a list of entities ("X , Y and Z"). [x|y z|] picks one option.
_LINK_TEXTS: dict[str, list[str]] = {
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
_LINK_TEXTS["mother"] = _LINK_TEXTS["father"]

# Opening sentences per topic kind: (pattern, [(link kind, head slot, tail slot), ...]).
_INTRO_TEXTS: dict[str, list[tuple[str, list[tuple[str, str, str]]]]] = {
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
    _INTRO_TEXTS[_k] = _INTRO_TEXTS["company"]

# Distractor sentences: no relation stated. Extra slots name the kind of entity they need
# ("city", "TIME:year", "NUM", "person", "country", "work"); slot x holds the given entity.
_DISTRACTOR_TEXTS: dict[str, list[str]] = {
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
NOMINAL_ANAPHORS = {
    "city": ("the", "city"), "region": ("the", "province"), "country": ("the", "country"),
    "company": ("the", "company"), "publisher": ("the", "publisher"), "label": ("the", "label"),
    "university": ("the", "university"), "party": ("the", "party"), "team": ("the", "club"),
    "band": ("the", "band"), "film": ("the", "film"), "book": ("the", "book"), "album": ("the", "album"),
}

# --------------------------------------------------------------------------------------------
# Template compilation
# --------------------------------------------------------------------------------------------
WORD, CHOICE, SLOT = 0, 1, 2  # op codes: word, choice, slot
_TOKEN_RE = re.compile(r"\[[^\]]*\]|\{[^}]*\}|\S+")
_FORM_RE = re.compile(r"^([a-z])(!?)('s|\*|:[a-z]+)?$")


class Template:
    __slots__ = ("ops", "links", "anaphor_slots", "list_slot", "extra")

    def __init__(self, text: str, links=(), extra=None):
        self.ops: list[tuple] = []
        self.anaphor_slots: set[str] = set()
        self.list_slot: str | None = None
        for tok in _TOKEN_RE.findall(text):
            if tok[0] == "[":
                self.ops.append((CHOICE, tuple(tuple(alt.split()) for alt in tok[1:-1].split("|"))))
            elif tok[0] == "{":
                body = tok[1:-1]
                if ":" in body and body.split(":")[1] in ("city", "person", "country", "year", "num", "work"):
                    slot, need = body.split(":")  # distractor slot with a kind requirement
                    self.ops.append((SLOT, slot, "m"))
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
                self.ops.append((SLOT, slot, form))
            else:
                self.ops.append((WORD, tok))
        self.links = list(links)
        self.extra = extra  # distractors: slot -> required kind


def _compile_all():
    link_t = {kind: [Template(t, [(kind, "a", "b")]) for t in texts] for kind, texts in _LINK_TEXTS.items()}
    intro_t = {kind: [Template(t, links) for t, links in items] for kind, items in _INTRO_TEXTS.items()}
    distract = {}
    for kind, texts in _DISTRACTOR_TEXTS.items():
        out = []
        for t in texts:
            extra = dict(re.findall(r"\{([a-z]):([a-z]+)\}", t))
            out.append(Template(t, (), extra))
        distract[kind] = out
    missing = set(LINK_FACTS) - set(link_t)
    if missing:
        raise AssertionError(f"link kinds without templates: {sorted(missing)}")
    return link_t, intro_t, distract


LINK_TEMPLATES, INTRO_TEMPLATES, DISTRACTOR_TEMPLATES = _compile_all()
