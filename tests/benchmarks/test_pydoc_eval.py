"""The Python-docs evaluation set's rules, on a page and an index made here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from pydoc_eval import (
    IndexEntry,
    Query,
    entry_kind,
    entry_query,
    index_entries,
    lexical_share,
    load_paraphrases,
    page_sections,
    select_queries,
    word_overlap,
)

PAGE = b"""<!doctype html><html><head><title>spam \xe2\x80\x94 Tins of spam \xe2\x80\x94 Python 3.11.2
documentation</title></head><body><div class="body" role="main">
<section id="module-spam"><h1>spam \xe2\x80\x94 Tins of spam<a class="headerlink" href="#x">\xc2\xb6</a></h1>
<p>The <span class="target" id="index-0"></span>spam module opens tins of canned meat for you.</p>
<section id="opening-tins"><h2>Opening tins</h2>
<dl class="py function"><dt id="spam.open">spam.open(tin)</dt><dd><p>Open a tin with a key and
return its contents as a list of slices.</p></dd></dl>
<p><span class="target" id="index-1"></span>A rusty key may break the lid of an old tin.</p>
</section>
<section id="notes"><h2>Notes</h2><p>Short.</p></section>
</section></div></body></html>"""

GENINDEX = b"""<html><body><table class="indextable genindextable"><tr><td><ul>
<li>$ (dollar)<ul><li><a href="library/spam.html#index-1">in rusty keys</a></li></ul></li>
<li>(?:<ul><li><a href="library/spam.html#index-1">in regular expressions</a></li></ul></li>
<li><a href="library/spam.html#spam.open">open() (in module spam)</a>
<ul><li><a href="library/eggs.html#eggs.open">(in module eggs)</a></li></ul></li>
<li><a href="library/spam.html#index-0">canned meat</a>, <a href="library/spam.html#index-1">[1]</a></li>
<li><a href="library/spam.html#index-0">RFC</a></li>
<li><a href="library/spam.html#index-0">spam</a></li>
<li><a href="library/spam.html#module-spam">tins of spam</a></li>
</ul></td></tr></table></body></html>"""


def test_a_page_is_cut_into_sections_and_each_anchor_into_its_innermost_section() -> None:
    sections, anchors = page_sections("library/spam.html", PAGE)
    keys = [s.key for s in sections]
    assert keys == [
        "library/spam.html#module-spam",
        "library/spam.html#opening-tins",
        "library/spam.html#notes",
    ]
    opening = sections[1]
    assert opening.page_title == "spam — Tins of spam"
    assert opening.heading_path == ["spam — Tins of spam", "Opening tins"]
    # The section's own content only, under the page's and its own headings.
    assert "<h1>spam — Tins of spam</h1><h2>Opening tins</h2>" in opening.html
    assert "rusty key" in opening.html and "canned meat" not in opening.html
    assert "canned meat" in sections[0].html and "rusty key" not in sections[0].html
    assert anchors["index-0"] == "library/spam.html#module-spam"
    assert anchors["index-1"] == "library/spam.html#opening-tins"
    assert anchors["spam.open"] == "library/spam.html#opening-tins"


def test_index_entries_become_queries_by_the_documented_rules(tmp_path: Path) -> None:
    (tmp_path / "genindex-all.html").write_bytes(GENINDEX)
    entries = index_entries(tmp_path)
    assert [(e.term, e.sub) for e in entries] == [
        ("$ (dollar)", "in rusty keys"),
        ("(?:", "in regular expressions"),
        ("open() (in module spam)", ""),
        ("open() (in module spam)", "(in module eggs)"),
        ("canned meat", ""),
        ("RFC", ""),
        ("spam", ""),
        ("tins of spam", ""),
    ]
    assert entries[4].targets == ["library/spam.html#index-0", "library/spam.html#index-1"]
    assert entry_query(entries[0]) == "dollar in rusty keys"
    assert entry_query(entries[2]) == "open in module spam"
    assert entry_query(entries[3]) == "open in module eggs"
    assert entry_kind(entries[0]) == "concept" and entry_kind(entries[2]) == "api"

    sections, page_anchors = page_sections("library/spam.html", PAGE)
    corpus = [s for s in sections if s.text_length >= 20]  # "Notes" is too short
    anchors = {f"library/spam.html#{a}": key for a, key in page_anchors.items()}
    queries = select_queries(entries, anchors, corpus, {"concept": 10, "api": 10})
    by_text = {q.text: q for q in queries}
    # Kept: a named symbol, an object (its other object is outside the corpus: not judged), a
    # term pointing at two sections. Left out: a nameless symbol, a citation ("RFC"), a single
    # word ("spam"), a term that is its section's title ("tins of spam").
    assert set(by_text) == {"dollar in rusty keys", "open in module spam", "canned meat"}
    assert by_text["canned meat"].relevant == {
        "library/spam.html#module-spam",
        "library/spam.html#opening-tins",
    }
    assert by_text["open in module spam"].kind == "api"
    assert by_text["open in module spam"].relevant == {"library/spam.html#opening-tins"}
    # Seeded: the same input gives the same queries in the same order.
    again = select_queries(entries, anchors, corpus, {"concept": 10, "api": 10})
    assert [q.text for q in again] == [q.text for q in queries]


def test_an_entry_outside_the_corpus_is_not_a_query() -> None:
    entry = IndexEntry("eggs frying", "", ["library/eggs.html#index-3"])
    assert select_queries([entry], {}, [], {"concept": 5, "api": 5}) == []


def test_lexical_share_counts_queries_whose_words_are_all_in_a_relevant_section() -> None:
    sections, _ = page_sections("library/spam.html", PAGE)
    opening = {"library/spam.html#opening-tins"}
    found = Query("rusty key lid", "concept", opening)  # every word in the section's text
    heading = Query("opening spam tins", "concept", opening)  # in its headings
    missing = Query("rusty spoon", "concept", opening)  # "spoon" is nowhere
    assert lexical_share([found, heading, missing, missing], sections) == 0.5


def test_word_overlap_is_the_mean_share_of_a_query_s_words_in_its_section() -> None:
    sections, _ = page_sections("library/spam.html", PAGE)
    opening = {"library/spam.html#opening-tins"}
    found = Query("rusty key lid", "concept", opening)  # 3 of 3
    half = Query("rusty spoon", "concept", opening)  # 1 of 2
    assert word_overlap([found, half], sections) == (1.0 + 0.5) / 2


def test_paraphrases_load_with_their_sections_and_refuse_one_outside_the_corpus(
    tmp_path: Path,
) -> None:
    sections, _ = page_sections("library/spam.html", PAGE)
    path = tmp_path / "set.json"
    path.write_text(
        '{"queries": [{"query": "how do I get at canned food", '
        '"relevant": ["library/spam.html#opening-tins"]}]}'
    )
    [query] = load_paraphrases(path, sections)
    assert (query.text, query.kind, query.relevant) == (
        "how do I get at canned food",
        "paraphrase",
        {"library/spam.html#opening-tins"},
    )
    path.write_text('{"queries": [{"query": "x", "relevant": ["library/eggs.html#nowhere"]}]}')
    with pytest.raises(SystemExit, match="outside the corpus"):
        load_paraphrases(path, sections)
