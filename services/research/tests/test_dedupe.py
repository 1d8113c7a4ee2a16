"""Near-duplicate detection across pages."""

from __future__ import annotations

import pytest
from edrs_research.web.dedupe import Deduper, jaccard, shingles

ARTICLE = (
    "The Moon orbits the Earth once every 27.3 days, a period astronomers call the sidereal "
    "month. Its distance from the Earth averages about 384,400 kilometres, and the same side "
    "always faces us because its rotation is tidally locked to its orbit around the planet."
)


def test_a_copy_with_other_boilerplate_is_a_near_duplicate() -> None:
    deduper = Deduper()
    assert deduper.seen(ARTICLE, key="news") is None
    copy = "Home | About\n" + ARTICLE.upper() + "\nShare this!"
    assert deduper.seen(copy, key="mirror") == "news"
    assert len(deduper) == 1  # the duplicate is not remembered


def test_different_pages_are_not_duplicates() -> None:
    deduper = Deduper()
    assert deduper.seen(ARTICLE, key="a") is None
    other = "The Sun is a star at the centre of the solar system; the planets orbit it."
    assert deduper.seen(other, key="b") is None
    # Half the text the same is not a near-duplicate at the default threshold.
    half = ARTICLE[: len(ARTICLE) // 2] + " " + other * 2
    assert deduper.seen(half, key="c") is None
    assert len(deduper) == 3


def test_similarity_and_threshold() -> None:
    a, b = shingles(ARTICLE), shingles(ARTICLE + " One more sentence at the end.")
    assert 0.8 < jaccard(a, b) < 1.0
    assert jaccard(a, a) == 1.0
    assert shingles("two words") == shingles("Two, words!")
    with pytest.raises(ValueError, match="threshold"):
        Deduper(threshold=0)
