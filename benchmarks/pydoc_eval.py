"""A retrieval evaluation set built from Debian's Python documentation (`python3.11-doc`).

The package ships the Python 3.11 documentation as HTML, and its general index
(`genindex-all.html`) maps index terms to anchors in it: a term and the places that explain it,
chosen by the documentation's authors. That is a relevance judgement made by people, for free:

- the **corpus** is sections of library reference pages (`library/*.html`): every `<section>` of
  a page becomes one document holding the section's own content (its nested sections are
  documents of their own), with the page title and the section's heading path as its headings.
  The pages are a seeded sample of the library reference, taken in a fixed order until a budget
  of characters is reached, so the corpus is the same on every run;
- the **queries** are index entries whose anchors fall in the corpus, turned into text (see
  `entry_query`), and a query's **relevant** sections (binary relevance) are the sections holding
  the anchors the entry points at. See `select_queries` for which entries are kept.

Nothing here talks to a service: `load_corpus` and `select_queries` are plain functions of the
extracted package, so the set is reproducible from the `.deb` alone. `fetch_docs` downloads and
unpacks the package once into a cache folder (`apt-get download`, `dpkg-deb -x`).
"""

from __future__ import annotations

import copy
import html as html_text
import random
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import html

PACKAGE = "python3.11-doc"
DOC_ROOT = "usr/share/doc/python3.11/html"
SEED = 10

# Words that do not make a query about anything on their own (for the trivial-query rule).
STOPWORDS = frozenset(
    {
        *("a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "is", "it", "of"),
        *("on", "or", "the", "to", "with", "module", "method", "function", "attribute"),
        *("class", "object", "built-in", "builtin", "statement"),
    }
)
# Entries of these pages are not reference text (tables of contents, an index of modules).
SKIP_PAGES = frozenset({"library/index.html"})
CITATION_TERMS = frozenset({"RFC", "Python Enhancement Proposals"})


@dataclass
class Section:
    """One document of the corpus: a section's own content, without its nested sections."""

    key: str  # "library/json.html#basic-usage": the page and the section's id
    page_title: str
    heading_path: list[str]
    html: str  # the document sent to the knowledge service
    text_length: int  # characters of its own text
    text: str = ""  # its own text, whitespace collapsed (for `lexical_share`)


@dataclass
class Query:
    """An index entry as a query, and the sections it points at."""

    text: str
    kind: str  # "concept" (an index directive or glossary term) or "api" (a Python object)
    relevant: set[str] = field(default_factory=set)


def fetch_docs(cache: Path) -> Path:
    """The documentation's HTML folder, downloaded and unpacked into `cache` the first time."""
    root = cache / PACKAGE / DOC_ROOT
    if (root / "genindex-all.html").exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        ["apt-get", "download", PACKAGE], cwd=cache, capture_output=True, text=True
    )
    debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    if download.returncode != 0 or not debs:
        raise SystemExit(
            f"apt-get download {PACKAGE} failed (its package lists may need `apt-get update`):\n"
            f"{download.stderr.strip()}"
        )
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(cache / PACKAGE)], check=True)
    return root


def package_version(cache: Path) -> str:
    """The version of the package in `cache` ("3.11.2-6+deb12u9"), from the .deb's name."""
    debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    return debs[-1].name.split("_")[1] if debs else "unknown"


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("¶", "")).strip()


def _heading(section: html.HtmlElement) -> str:
    for child in section:
        if isinstance(child.tag, str) and re.fullmatch(r"h[1-6]", child.tag):
            return _clean(child.text_content())
    return ""


def page_sections(page: str, source: bytes) -> tuple[list[Section], dict[str, str]]:
    """The sections of one page, and where each anchor of the page is: anchor → section key.

    An anchor belongs to the innermost section holding it."""
    tree = html.fromstring(source.decode("utf-8"))  # Sphinx writes UTF-8
    title_nodes = tree.xpath("//title")
    page_title = _clean(title_nodes[0].text_content()) if title_nodes else page
    page_title = re.sub(r"\s+—\s+Python [\d.]+ documentation$", "", page_title)
    sections: list[Section] = []
    anchors: dict[str, str] = {}
    for node in tree.xpath("//div[@role='main']//section[@id]"):
        path = [_heading(s) for s in reversed(list(node.iterancestors("section")))]
        path.append(_heading(node))
        key = f"{page}#{node.get('id')}"
        own = copy.deepcopy(node)
        for nested in own.xpath("./section"):
            own.remove(nested)
        for element in own.iter():
            ident = element.get("id") if isinstance(element.tag, str) else None
            if ident:
                anchors[ident] = key
        for heading in own.xpath("./h1|./h2|./h3|./h4|./h5|./h6"):
            own.remove(heading)
        for link in own.xpath(".//a[@class='headerlink']"):
            link.drop_tree()
        own_text = _clean(own.text_content())
        headings = "".join(
            f"<h{min(i + 1, 6)}>{html_text.escape(title)}</h{min(i + 1, 6)}>"
            for i, title in enumerate(path)
        )
        body = "".join(html.tostring(child, encoding=str) for child in own)
        document = (
            f"<!doctype html><html><head><title>{html_text.escape(page_title)}</title></head>"
            f"<body><main><article>{headings}{body}</article></main></body></html>"
        )
        sections.append(Section(key, page_title, path, document, len(own_text), own_text))
    return sections, anchors


def load_corpus(
    root: Path, budget_chars: int, min_chars: int = 80
) -> tuple[list[Section], dict[str, str]]:
    """Sections of library pages sampled (seeded) until `budget_chars` of text; sections with
    less than `min_chars` of their own text (a heading over nested sections) are left out.

    Returns the sections and every anchor of the chosen pages → its section's key (also for
    anchors in sections left out, so a query pointing there finds no relevant document)."""
    pages = sorted(
        f"library/{p.name}"
        for p in (root / "library").glob("*.html")
        if f"library/{p.name}" not in SKIP_PAGES
    )
    random.Random(SEED).shuffle(pages)
    corpus: list[Section] = []
    anchors: dict[str, str] = {}
    total = 0
    for page in pages:
        if total >= budget_chars:
            break
        sections, page_anchors = page_sections(page, (root / page).read_bytes())
        kept = [s for s in sections if s.text_length >= min_chars]
        if not kept:  # a table of contents
            continue
        corpus += kept
        total += sum(s.text_length for s in kept)
        anchors.update({f"{page}#{a}": key for a, key in page_anchors.items()})
    return corpus, anchors


@dataclass
class IndexEntry:
    term: str
    sub: str
    targets: list[str]  # "library/os.html#os.getcwd"


def index_entries(root: Path) -> list[IndexEntry]:
    """Every (term, sub-entry) of the general index with the anchors it links to."""
    tree = html.fromstring((root / "genindex-all.html").read_text(encoding="utf-8"))
    entries: list[IndexEntry] = []

    def own_text(li: html.HtmlElement) -> str:
        parts = [li.text or ""]
        for child in li:
            if child.tag == "ul":
                break
            if child.tag == "a" and re.fullmatch(r"\[\d+\]", child.text_content().strip()):
                continue
            parts.append(child.text_content())
            parts.append(child.tail or "")
        return _clean("".join(parts)).strip(", ")

    def links(li: html.HtmlElement) -> list[str]:
        return [a.get("href") for a in li.xpath("./a[@href]")]

    for li in tree.xpath("//table[contains(@class,'indextable')]//td/ul/li"):
        term = own_text(li)
        if links(li):
            entries.append(IndexEntry(term, "", links(li)))
        for sub in li.xpath("./ul/li"):
            if links(sub):
                entries.append(IndexEntry(term, own_text(sub), links(sub)))
    return entries


_SYMBOL_NAME = re.compile(r"^[^\w\s]+\s*\(([^)]*)\)")  # "$ (dollar)" → "dollar"


def entry_query(entry: IndexEntry) -> str:
    """The entry as query text: qualifiers in brackets become words ("getcwd() (in module os)"
    → "getcwd in module os"), a symbol with its name in brackets becomes the name ("$ (dollar)"
    → "dollar"), call brackets and other punctuation-only tokens go."""
    term = entry.term
    if entry.sub.startswith("("):  # another object of the same name: "(nntplib.NNTP method)"
        term = re.sub(r"\s*\([^()]*\)$", "", term)
    words: list[str] = []
    for part in (term, entry.sub):
        part = _SYMBOL_NAME.sub(r"\1", part)
        part = part.replace("()", " ").replace("(", " ").replace(")", " ").replace(";", " ")
        words += [w.strip(",:") for w in part.split() if re.search(r"\w", w)]
    return " ".join(w for w in words if w)


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9_]+", text.lower()) if w not in STOPWORDS}


def entry_kind(entry: IndexEntry) -> str:
    """ "concept" when the entry's anchors are index directives or glossary terms ("index-12",
    "term-…"), "api" when they are Python objects ("os.getcwd")."""
    fragments = [t.partition("#")[2] for t in entry.targets]
    concept = all(re.fullmatch(r"index-\d+|term-.*", f) for f in fragments)
    return "concept" if concept else "api"


def select_queries(
    entries: Iterable[IndexEntry],
    anchors: dict[str, str],
    corpus: list[Section],
    per_kind: dict[str, int],
) -> list[Query]:
    """Queries from index entries, at most `per_kind[kind]` of each kind, seeded.

    An entry is kept when:
    - at least one of its anchors is in a section of the corpus (its relevant sections are those;
      anchors outside the corpus are not judged);
    - its query has at least two words with a letter, so a bare name ("__slots__") is not a query,
      and its term has one: a symbol with no name ("(?:") would leave only "in regular
      expressions";
    - it is not a citation: the terms "RFC" and "Python Enhancement Proposals" are made by the
      :rfc: and :pep: roles wherever a page cites one, not where it explains anything;
    - it is not trivial: some content word of the query (not in STOPWORDS) is missing from every
      relevant section's heading path, so the answer is not just "the section named so".
    Entries giving the same query text are one query with the union of their sections."""
    titles = {s.key: _content_words(" ".join([s.page_title, *s.heading_path])) for s in corpus}
    merged: dict[str, Query] = {}
    for entry in entries:
        if entry.term in CITATION_TERMS:
            continue
        relevant = {anchors[t] for t in entry.targets if t in anchors}
        relevant &= titles.keys()
        if not relevant:
            continue
        text = entry_query(entry)
        if len(re.findall(r"\b[^\W\d_]\w*", text)) < 2:
            continue
        if not re.search(r"[^\W\d_]", _SYMBOL_NAME.sub(r"\1", entry.term)):
            continue  # "(?:" in regular expressions: the query would lose what it asks about
        words = _content_words(text)
        if not words or all(words <= titles[key] for key in relevant):
            continue
        query = merged.setdefault(text.lower(), Query(text, entry_kind(entry)))
        query.relevant |= relevant
    rng = random.Random(SEED)
    chosen: list[Query] = []
    for kind, count in sorted(per_kind.items()):
        pool = sorted((q for q in merged.values() if q.kind == kind), key=lambda q: q.text)
        chosen += rng.sample(pool, min(count, len(pool)))
    return chosen


def lexical_share(queries: list[Query], corpus: list[Section]) -> float:
    """The share of queries whose content words all occur in a relevant section (its headings
    or its own text): how far the set favours exact word matching."""
    words = {
        s.key: _content_words(" ".join([s.page_title, *s.heading_path, s.text])) for s in corpus
    }
    matched = sum(any(_content_words(q.text) <= words[key] for key in q.relevant) for q in queries)
    return matched / len(queries) if queries else 0.0


def word_overlap(queries: list[Query], corpus: list[Section]) -> float:
    """The mean share of a query's content words that occur in its best-matching relevant
    section (headings or own text): 1.0 when a section holds every word of every query."""
    words = {
        s.key: _content_words(" ".join([s.page_title, *s.heading_path, s.text])) for s in corpus
    }
    shares = []
    for q in queries:
        mine = _content_words(q.text)
        if mine:
            shares.append(max(len(mine & words[key]) / len(mine) for key in q.relevant))
    return sum(shares) / len(shares) if shares else 0.0


def load_paraphrases(path: Path, corpus: list[Section]) -> list[Query]:
    """The hand-written paraphrase questions of `path` (`data/pydoc_paraphrase.json`), kind
    "paraphrase"; every relevant section must be in the corpus."""
    import json

    keys = {s.key for s in corpus}
    queries = []
    for item in json.loads(path.read_text())["queries"]:
        missing = set(item["relevant"]) - keys
        if missing:
            raise SystemExit(f"{path.name}: {item['query']!r} names sections outside the corpus")
        queries.append(Query(item["query"], "paraphrase", set(item["relevant"])))
    return queries
