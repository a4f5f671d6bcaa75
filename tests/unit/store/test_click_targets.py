"""The click redirect's in-memory targets: ranges of request ids and their links, bounded."""

from __future__ import annotations

from sesender.models import ClickRange
from sesender.store.click_targets import ClickTargets

LINKS = ("https://a.example/", "https://b.example/")


def test_an_email_in_a_remembered_range_has_its_links_and_any_other_is_unknown() -> None:
    targets = ClickTargets()
    targets.remember([ClickRange(10, 19, LINKS), ClickRange(30, 30, ("https://c.example/",))])
    targets.remember([ClickRange(20, 25, ())])  # out of order, and a content with no link
    assert targets.links_of(10) == LINKS
    assert targets.links_of(19) == LINKS
    assert targets.links_of(22) == ()
    assert targets.links_of(30) == ("https://c.example/",)
    for unknown in (1, 9, 26, 29, 31, 10**12):
        assert targets.links_of(unknown) is None


def test_the_oldest_ranges_are_forgotten_past_the_bound() -> None:
    targets = ClickTargets(max_ranges=3)
    targets.remember(ClickRange(n * 10, n * 10 + 4, LINKS) for n in range(1, 6))
    assert len(targets) == 3
    assert targets.links_of(12) is None
    assert targets.links_of(22) is None
    assert targets.links_of(32) == LINKS
    assert targets.links_of(54) == LINKS


def test_a_range_already_known_or_empty_is_ignored() -> None:
    targets = ClickTargets()
    targets.remember([ClickRange(5, 9, LINKS), ClickRange(5, 9, ("https://other.example/",))])
    targets.remember([ClickRange(12, 11, LINKS)])
    assert targets.links_of(7) == LINKS
    assert targets.links_of(11) is None
    assert len(targets) == 1
