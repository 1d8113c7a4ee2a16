"""Knowledge-graph extraction: the entities a document's passages name and the relations they
state between them, read by rules (deterministic, offline, CPU only; docs/knowledge.md, "The
knowledge graph").

A document is read passage by passage. In each sentence:

- **Names** are runs of capitalised words ("Acme Corp", "Bank of America", "ACME", "OpenAI"),
  joined only by spaces and a few connectors ("of", "&", "de", "van", "von", ...), with leading
  determiners and sentence words ("The", "In", ...) dropped, and stopped by role words ("CEO",
  "Founder", ...), months and weekdays. A lone capitalised word that starts a sentence ("Travel
  is booked ...") is a name only when the document also writes it capitalised mid-sentence, it is
  written in capitals or camel case, or a relation pattern below names it.
- **Aliases** are declared: `Name (ALIAS)`, `Name ("Alias")`, `Name, also known as Alias`,
  `aka`, `formerly (known as)`, `better known as`.
- **Relations** are a name, a verb phrase from `_PATTERNS` ("acquired", "was acquired by", "works
  at", "is the CEO of", "is headquartered in", ...) and a name, the verb phrase being everything
  between the two (an adverb such as "recently" or an auxiliary allowed); and `Name is a/an
  noun phrase` (`is_a`, its object an entity of type `concept`). A date in the sentence ("in June
  2024", "since 2021") is the relation's `valid_from`.

Names are deduplicated by `normalize_name`: Unicode NFKC, case-folded, punctuation and a leading
"the" dropped, "&" read as "and", trailing company suffixes ("Corp", "Corporation", "Inc",
"Ltd", "LLC", ...) removed, so "Acme Corp", "ACME Corporation" and "Acme" are one entity; a
declared alias joins two names that normalise differently.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

ORGANIZATION = "organization"
PERSON = "person"
PLACE = "place"
PRODUCT = "product"
CONCEPT = "concept"

# Trailing words of a company's name that do not tell two companies apart.
_COMPANY_SUFFIXES = frozenset(
    [
        "corp",
        "corporation",
        "inc",
        "incorporated",
        "ltd",
        "limited",
        "llc",
        "plc",
        "co",
        "company",
        "gmbh",
        "ag",
        "sa",
        "bv",
        "nv",
    ]
)
# Last words that make a name an organization.
_ORGANIZATION_WORDS = _COMPANY_SUFFIXES | frozenset(
    [
        "group",
        "holdings",
        "bank",
        "university",
        "labs",
        "laboratories",
        "technologies",
        "systems",
        "partners",
        "institute",
        "foundation",
        "agency",
        "ministry",
        "association",
        "council",
        "committee",
        "department",
    ]
)
_PERSON_TITLES = frozenset(["mr", "mrs", "ms", "miss", "dr", "prof", "sir", "dame"])
# Capitalised words that are never (part of) a name: sentence words, pronouns, determiners.
_SENTENCE_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "he",
        "she",
        "they",
        "we",
        "you",
        "i",
        "our",
        "your",
        "their",
        "his",
        "her",
        "my",
        "in",
        "on",
        "at",
        "for",
        "from",
        "to",
        "by",
        "with",
        "of",
        "as",
        "if",
        "when",
        "while",
        "after",
        "before",
        "during",
        "since",
        "until",
        "into",
        "and",
        "or",
        "but",
        "so",
        "yet",
        "nor",
        "not",
        "no",
        "yes",
        "all",
        "any",
        "each",
        "every",
        "some",
        "many",
        "most",
        "much",
        "more",
        "few",
        "other",
        "there",
        "here",
        "where",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "how",
        "however",
        "also",
        "then",
        "thus",
        "therefore",
        "please",
        "note",
        "see",
    ]
)
_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_ROLES = {
    "ceo": "ceo",
    "cto": "cto",
    "cfo": "cfo",
    "coo": "coo",
    "founder": "founder",
    "co-founder": "founder",
    "cofounder": "founder",
    "president": "president",
    "chairman": "chair",
    "chairwoman": "chair",
    "chair": "chair",
    "chairperson": "chair",
    "director": "director",
    "head": "head",
}
# Capitalised words that stop a name run and are never a name.
_BREAKERS = (
    _SENTENCE_WORDS
    | frozenset(_MONTHS)
    | frozenset(_DAYS)
    | frozenset(_ROLES)
    | frozenset(["chief", "executive", "officer", "vice"])
)
# Lower-case words allowed inside a name between two capitalised words.
_CONNECTORS = frozenset(
    ["of", "&", "de", "du", "da", "van", "von", "der", "den", "la", "le", "di", "del"]
)

# (pattern of the words between subject and object, predicate, reversed?) — the pattern must
# match all of the text between the two names. `{aux}` allows auxiliaries and an adverb.
_AUX = r"(?:(?:has|have|had|also|recently|formally|officially|finally|\w+ly)\s+)*"
_PATTERNS: list[tuple[str, str, bool]] = [
    (r"{aux}(?:acquired|bought|purchased|took over)", "acquired", False),
    (
        r"{aux}(?:was|were|has been|had been|is being) (?:acquired|bought|purchased) by",
        "acquired",
        True,
    ),
    (r"{aux}(?:works?|worked|working|is working) (?:at|for)", "works_at", False),
    (r"{aux}(?:is|was) (?:employed|hired) by", "works_at", False),
    (r"{aux}(?:joined|is an employee of|was an employee of)", "works_at", False),
    (r"{aux}(?:is|was|are|were)? ?(?:headquartered|based|located) in", "located_in", False),
    (r"{aux}(?:founded|co-?founded|started|established)", "founded", False),
    (r"{aux}(?:was|were|is) (?:founded|co-?founded|started|established) by", "founded", True),
    (r"{aux}(?:owns|owned)", "owns", False),
    (r"{aux}(?:is|was) owned by", "owns", True),
    (
        r"{aux}(?:is|was|became) (?:a |an )?(?:subsidiary|division|unit|part) of",
        "subsidiary_of",
        False,
    ),
    (r"{aux}(?:partnered|partners|is partnering|teamed up) with", "partner_of", False),
    (r"{aux}(?:merged|merges) with", "merged_with", False),
    (r"{aux}(?:invested|invests) in", "invested_in", False),
    (r"{aux}(?:supplies|supplied|is a supplier (?:of|to))", "supplies", False),
    (r"{aux}(?:reports|reported) to", "reports_to", False),
    (r"{aux}(?:leads|led|heads|headed|manages|managed|runs|ran)", "leads", False),
    (r"{aux}(?:is|was) (?:led|headed|managed|run) by", "leads", True),
    (r"{aux}(?:competes|competed) with", "competes_with", False),
]
# Predicates that hold for one partner at a time: a subject works at one place, is located in
# one, ...; a company has one CEO and one acquirer. A new relation that gives the functional side
# another partner supersedes the current one (docs/knowledge.md, "Supersession").
FUNCTIONAL: dict[str, str] = {
    "works_at": "subject",
    "located_in": "subject",
    "subsidiary_of": "subject",
    "reports_to": "subject",
    "acquired": "object",
    "ceo_of": "object",
    "cto_of": "object",
    "cfo_of": "object",
    "coo_of": "object",
    "president_of": "object",
    "chair_of": "object",
}
_ROLE_WORDS = "|".join(sorted((re.escape(r) for r in _ROLES), key=len, reverse=True))
# "X is the CEO of Y", "X, CEO of Y", "X became chief executive of Y", "X was named CTO of Y".
_ROLE = re.compile(
    r"^\s*,?\s*(?:(?:is|was|became|has been|remains|was named|was appointed|is now)\s+)?"
    rf"(?:(?:the|a|an|its|their)\s+)?(?:(?:new|former|current|interim|acting)\s+)?"
    rf"(?P<role>{_ROLE_WORDS}|chief executive(?: officer)?|chief technology officer|"
    r"chief financial officer|chief operating officer)\s+(?:of|at)\s*$",
    re.IGNORECASE,
)
_CHIEF = {
    "chief executive": "ceo",
    "chief executive officer": "ceo",
    "chief technology officer": "cto",
    "chief financial officer": "cfo",
    "chief operating officer": "coo",
}
_RELATION_PATTERNS = [
    (re.compile(r"^\s*,?\s*" + p.format(aux=_AUX) + r"\s*$", re.IGNORECASE), predicate, reverse)
    for p, predicate, reverse in _PATTERNS
]
# Between a name and its declared alias (the alias then closes with `_ALIAS_CLOSE` when the
# opening bracket is used).
_ALIAS_OPEN = re.compile(
    r"^\s*\(\s*[\"'\u201c\u2018]?\s*(?:(?:also known as|aka|a\.k\.a\.|formerly(?: known as)?|"
    r"better known as|or)\s+)?[\"'\u201c\u2018]?$",
    re.IGNORECASE,
)
_ALIAS_CLOSE = re.compile(r"^[\"'\u201d\u2019]?\s*\)")
_ALIAS_INLINE = re.compile(
    r"^\s*,?\s*(?:also known as|aka|a\.k\.a\.|formerly known as|formerly|better known as)\s+"
    r"[\"'\u201c\u2018]?$",
    re.IGNORECASE,
)
# "X is a logistics company", "X was an early investor": up to four words of a noun phrase.
_IS_A = re.compile(
    r"^\s+(?:is|was)\s+(?:a|an)\s+(?P<np>[a-z][\w-]*(?:\s+[a-z][\w-]*){0,3})", re.UNICODE
)
_NP_STOP = frozenset(
    [
        "that",
        "which",
        "who",
        "whose",
        "with",
        "in",
        "of",
        "for",
        "from",
        "and",
        "or",
        "but",
        "to",
        "at",
        "on",
        "by",
        "based",
        "since",
        "as",
    ]
)
_PLACE_WORDS = frozenset(
    ["city", "town", "country", "region", "state", "province", "capital", "village"]
)
_PERSON_WORDS = frozenset(
    [
        "engineer",
        "manager",
        "founder",
        "person",
        "developer",
        "designer",
        "director",
        "lawyer",
        "doctor",
        "author",
        "researcher",
        "scientist",
        "analyst",
        "consultant",
        "executive",
        "investor",
        "employee",
        "architect",
    ]
)
_ORGANIZATION_NOUNS = frozenset(
    [
        "company",
        "firm",
        "corporation",
        "startup",
        "business",
        "bank",
        "manufacturer",
        "supplier",
        "vendor",
        "retailer",
        "organization",
        "organisation",
        "agency",
        "subsidiary",
        "provider",
        "operator",
        "insurer",
        "university",
    ]
)
_PRODUCT_WORDS = frozenset(
    ["product", "tool", "platform", "app", "application", "software", "service", "device"]
)

_TOKEN = re.compile(r"\w[\w'\u2019-]*|&", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[^\sa-z])|\n+|\s+\|\s+")
_DATE = re.compile(
    r"\b(?:in|since|from|on|as of|effective)\s+(?:(?P<day>\d{1,2})\s+)?"
    rf"(?:(?P<month>{'|'.join(_MONTHS)})\s+)?(?P<year>(?:19|20)\d\d)\b",
    re.IGNORECASE,
)
MAX_ALIASES = 20


def normalize_name(name: str, *, company_suffixes: bool = True) -> str:
    """The key two names of one entity share: NFKC, case-folded, punctuation dropped ("&" is
    "and"), a leading "the" and trailing company suffixes removed (kept for a concept's noun
    phrase, `company_suffixes=False`: "logistics company" is not "logistics")."""
    text = unicodedata.normalize("NFKC", name).casefold().replace("\u2019", "'")
    text = re.sub(r"'s\b", "", text).replace("&", " and ")
    words = re.findall(r"\w+", text)
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    while company_suffixes and len(words) > 1 and words[-1] in _COMPANY_SUFFIXES:
        words = words[:-1]
    return " ".join(words)


def query_keys(query: str, longest: int = 5, limit: int = 500) -> list[str]:
    """Every run of 1..`longest` words of a query, normalised: the names a query may mention
    (an entity is matched when its name or an alias normalises to one of them)."""
    words = re.findall(r"\w+(?:['\u2019]\w+)*", query)
    keys: dict[str, None] = {}
    for size in range(1, longest + 1):
        for i in range(len(words) - size + 1):
            phrase = " ".join(words[i : i + size])
            for key in (normalize_name(phrase), normalize_name(phrase, company_suffixes=False)):
                if key and not (size == 1 and key in _SENTENCE_WORDS):
                    keys[key] = None
            if len(keys) >= limit:
                return list(keys)
    return list(keys)


@dataclass(frozen=True)
class Mention:
    """A name in a sentence: its text, where it is, and whether it starts the sentence."""

    name: str
    start: int  # offsets in the sentence
    end: int
    initial: bool
    title: str = ""  # a person's title before it ("Dr")


@dataclass
class ExtractedEntity:
    key: str  # the normalised name
    name: str  # the preferred surface form
    type: str
    aliases: list[str] = field(default_factory=list)  # other surface forms
    keys: set[str] = field(default_factory=set)  # every normalised form (name and aliases)


@dataclass(frozen=True)
class ExtractedRelation:
    subject: str  # entity keys
    predicate: str
    object: str
    valid_from: date | None = None


@dataclass
class PassageGraph:
    """What one passage names and states."""

    mentions: set[str] = field(default_factory=set)  # entity keys
    relations: list[ExtractedRelation] = field(default_factory=list)


@dataclass
class Extraction:
    entities: dict[str, ExtractedEntity]
    passages: list[PassageGraph]

    @property
    def relation_count(self) -> int:
        return sum(len(p.relations) for p in self.passages)


def _capitalised(token: str) -> bool:
    return token[0].isupper() or (token[0].isalpha() and any(c.isupper() for c in token[1:]))


def _strong(token: str) -> bool:
    """Written in capitals ("ACME") or camel case ("OpenAI", "iPhone"): a name wherever it is."""
    letters = [c for c in token if c.isalpha()]
    return len(letters) >= 2 and (
        all(c.isupper() for c in letters) or any(c.isupper() for c in token[1:])
    )


def _sentences(text: str, headings: Iterable[str]) -> list[str]:
    skip = {h.strip() for h in headings}
    out: list[str] = []
    for part in _SENTENCE.split(text):
        part = part.strip().lstrip("-*#>|) ").strip()
        if part and part not in skip:
            out.append(part)
    return out


def mentions(sentence: str) -> list[Mention]:
    """The capitalised name runs of a sentence (see the module's description)."""
    tokens = list(_TOKEN.finditer(sentence))
    found: list[Mention] = []
    run: list[re.Match[str]] = []
    title = ""

    def close() -> None:
        nonlocal run, title
        while run and run[-1].group().lower() in _CONNECTORS:
            run = run[:-1]
        if run:
            first = run[0]
            initial = sentence[: first.start()].strip(" \"'\u201c\u2018(") == ""
            end = run[-1].end()
            name = sentence[first.start() : end]
            name = re.sub(r"['\u2019]s$", "", name)
            found.append(Mention(name, first.start(), first.start() + len(name), initial, title))
        run, title = [], ""

    for i, token in enumerate(tokens):
        word = token.group()
        lower = word.lower().rstrip(".")
        gap = sentence[tokens[i - 1].end() : token.start()] if i else ""
        joined = bool(run) and gap.strip(" ") == ""
        if run and not joined:
            close()
        if lower in _PERSON_TITLES and _capitalised(word):
            close()
            title = word
            continue
        if _capitalised(word) and not word[0].isdigit() and lower not in _BREAKERS:
            if run and not joined:
                close()
            run.append(token)
            continue
        if (
            run
            and lower in _CONNECTORS
            and i + 1 < len(tokens)
            and _capitalised(tokens[i + 1].group())
        ):
            run.append(token)
            continue
        if title and not run:
            title = ""
        close()
    close()
    return [m for m in found if m.name.lower() not in _SENTENCE_WORDS]


def _type_of(name: str, title: str) -> str:
    words = re.findall(r"\w+", name.lower())
    if title or (words and words[0] in _PERSON_TITLES):
        return PERSON
    if words and words[-1] in _ORGANIZATION_WORDS:
        return ORGANIZATION
    return ""


def _type_of_noun(phrase: str) -> str:
    head = phrase.split()[-1]
    if head in _ORGANIZATION_NOUNS:
        return ORGANIZATION
    if head in _PERSON_WORDS:
        return PERSON
    if head in _PLACE_WORDS:
        return PLACE
    if head in _PRODUCT_WORDS:
        return PRODUCT
    return ""


# The types a predicate gives its subject and object when the name alone says nothing.
_PREDICATE_TYPES: dict[str, tuple[str, str]] = {
    "acquired": (ORGANIZATION, ORGANIZATION),
    "works_at": (PERSON, ORGANIZATION),
    "located_in": ("", PLACE),
    "subsidiary_of": (ORGANIZATION, ORGANIZATION),
    "merged_with": (ORGANIZATION, ORGANIZATION),
    "founded": ("", ORGANIZATION),
    "reports_to": (PERSON, PERSON),
    **{f"{role}_of": (PERSON, ORGANIZATION) for role in set(_ROLES.values())},
}


# Every predicate the rules state, and so every one the model extractor may name
# (edrs_knowledge.graph_model): the verb patterns, the roles and `is_a`.
PREDICATES: tuple[str, ...] = tuple(
    sorted({p for _, p, _ in _PATTERNS} | {f"{role}_of" for role in _ROLES.values()} | {"is_a"})
)
ENTITY_TYPES: tuple[str, ...] = (ORGANIZATION, PERSON, PLACE, PRODUCT, CONCEPT)
MONTHS: tuple[str, ...] = tuple(_MONTHS)


def predicate_types(predicate: str) -> tuple[str, str]:
    """The types a predicate gives its subject and object when nothing else says ("" unknown)."""
    if predicate == "is_a":
        return "", CONCEPT
    return _PREDICATE_TYPES.get(predicate, ("", ""))


def is_common_word(key: str) -> bool:
    """A normalised name that is a sentence word ("the", "it", "our"), never an entity."""
    return key in _SENTENCE_WORDS


def _date(sentence: str) -> date | None:
    match = _DATE.search(sentence)
    if match is None:
        return None
    month = _MONTHS.index(match["month"].lower()) + 1 if match["month"] else 1
    day = int(match["day"]) if match["day"] and match["month"] else 1
    try:
        return date(int(match["year"]), month, day)
    except ValueError:
        return date(int(match["year"]), month, 1)


@dataclass
class _Sentence:
    passage: int
    text: str
    mentions: list[Mention]


class _Names:
    """Union of names into entities: a declared alias joins two groups."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.forms: dict[str, Counter[str]] = {}
        self.types: dict[str, Counter[str]] = {}
        self.seen: dict[str, int] = {}  # a surface form's first appearance

    def add(self, name: str, type_: str = "", *, count: bool = True) -> str:
        key = normalize_name(name, company_suffixes=type_ != CONCEPT)
        if not key:
            return ""
        self.parent.setdefault(key, key)
        self.forms.setdefault(key, Counter())[name] += 1 if count else 0
        self.seen.setdefault(name, len(self.seen))
        if type_:
            self.types.setdefault(key, Counter())[type_] += 1
        return key

    def root(self, key: str) -> str:
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def join(self, a: str, b: str) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            first, second = sorted((ra, rb))
            self.parent[second] = first

    def entities(self) -> dict[str, ExtractedEntity]:
        groups: dict[str, list[str]] = {}
        for key in self.parent:
            groups.setdefault(self.root(key), []).append(key)
        out: dict[str, ExtractedEntity] = {}
        for keys in groups.values():
            forms: Counter[str] = Counter()
            types: Counter[str] = Counter()
            for k in keys:
                forms.update(self.forms[k])
                types.update(self.types.get(k, Counter()))
            # The most frequent surface form, then the first written.
            name = sorted(forms, key=lambda f: (-forms[f], self.seen[f]))[0]
            # One alias per spelling that differs from the name by more than case.
            by_case: dict[str, str] = {}
            for f in sorted(forms, key=lambda f: self.seen[f]):
                by_case.setdefault(f.casefold(), f)
            by_case.pop(name.casefold(), None)
            aliases = sorted(by_case.values(), key=lambda f: (f.casefold(), f))[:MAX_ALIASES]
            kind = sorted(types, key=lambda t: (-types[t], t))[0] if types else ""
            key = normalize_name(name, company_suffixes=kind != CONCEPT)
            entity = ExtractedEntity(key=key, name=name, type=kind, aliases=aliases, keys=set(keys))
            for k in keys:
                out[k] = entity
        return out


def extract(passages: Sequence[tuple[str, Sequence[str]]]) -> Extraction:
    """The entities and relations of a document's passages, each passage given as (text,
    heading path). Deterministic: the same passages give the same extraction."""
    sentences = [
        _Sentence(i, s, mentions(s))
        for i, (text, headings) in enumerate(passages)
        for s in _sentences(text, headings)
    ]
    # Names written capitalised away from a sentence's start anywhere in the document.
    confirmed = {normalize_name(m.name) for s in sentences for m in s.mentions if not m.initial} | {
        normalize_name(m.name) for s in sentences for m in s.mentions if _strong(m.name)
    }
    names = _Names()
    graphs = [PassageGraph() for _ in passages]
    counted: set[tuple[int, int]] = set()  # (sentence, offset) of the names counted
    for number, s in enumerate(sentences):
        graph = graphs[s.passage]
        used: set[int] = set()  # mentions a pattern named
        when = _date(s.text)

        def key_of(
            m: Mention, type_: str = "", number: int = number, graph: PassageGraph = graph
        ) -> str:
            first = (number, m.start) not in counted
            counted.add((number, m.start))
            key = names.add(m.name, type_ or _type_of(m.name, m.title), count=first)
            if key:
                graph.mentions.add(key)
            return key

        ms = s.mentions
        for j, m in enumerate(ms):
            after = s.text[m.end :]
            # Declared aliases.
            if j + 1 < len(ms):
                n = ms[j + 1]
                gap = s.text[m.end : n.start]
                if (_ALIAS_OPEN.match(gap) and _ALIAS_CLOSE.match(s.text[n.end :])) or (
                    _ALIAS_INLINE.match(gap)
                ):
                    a, b = key_of(m), key_of(n)
                    if a and b:
                        names.join(a, b)
                    used.update((j, j + 1))
                    continue
                relation = _relation(gap)
                if relation is not None:
                    predicate, reverse = relation
                    subject, obj = (n, m) if reverse else (m, n)
                    types = _PREDICATE_TYPES.get(predicate, ("", ""))
                    sk = key_of(subject, _type_of(subject.name, subject.title) or types[0])
                    ok = key_of(obj, _type_of(obj.name, obj.title) or types[1])
                    if sk and ok and sk != ok:
                        graph.relations.append(ExtractedRelation(sk, predicate, ok, when))
                    used.update((j, j + 1))
                    continue
            # "X is a logistics company".
            is_a = _IS_A.match(after)
            if is_a is not None:
                words = is_a["np"].split()
                for cut, w in enumerate(words):
                    if w in _NP_STOP:
                        words = words[:cut]
                        break
                if words:
                    phrase = " ".join(words)
                    kind = _type_of_noun(phrase)
                    sk = key_of(m, _type_of(m.name, m.title) or kind)
                    ok = key_of(Mention(phrase, 0, 0, False), CONCEPT)
                    if sk and ok and sk != ok:
                        graph.relations.append(ExtractedRelation(sk, "is_a", ok, when))
                    used.add(j)
        for j, m in enumerate(ms):
            if j in used:
                continue
            if m.initial and " " not in m.name and normalize_name(m.name) not in confirmed:
                continue
            key_of(m)
    entities = names.entities()
    # Passages and relations name entities by their group's key.
    for graph in graphs:
        graph.mentions = {entities[k].key for k in graph.mentions}
        graph.relations = list(
            dict.fromkeys(
                ExtractedRelation(
                    entities[r.subject].key, r.predicate, entities[r.object].key, r.valid_from
                )
                for r in graph.relations
                if entities[r.subject].key != entities[r.object].key
            )
        )
    unique = {e.key: e for e in entities.values()}
    return Extraction(entities=unique, passages=graphs)


def _relation(gap: str) -> tuple[str, bool] | None:
    """The predicate the words between two names state, and whether it reads object first."""
    # What closes a declared alias before it ("Acme Corporation (ACME) is based in ...").
    gap = re.sub(r"^[\s\"'\u201d\u2019)]*\)", " ", gap)
    if len(gap) > 60 or any(c in gap for c in ".;:()[]"):
        return None
    role = _ROLE.match(gap)
    if role is not None:
        word = role["role"].lower()
        return f"{_CHIEF.get(word) or _ROLES[word]}_of", False
    for pattern, predicate, reverse in _RELATION_PATTERNS:
        if pattern.match(gap):
            return predicate, reverse
    return None
