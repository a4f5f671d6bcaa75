"""The service's collector settings: start-up frozen, young collections every 20,000."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sesender.gc_tuning import YOUNG_THRESHOLD, tune_for_service


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_freezes_what_exists_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 11, 12)
    survivor = [object()]  # a container that exists at tuning time
    tune_for_service()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)  # older generations untouched
    assert gc.get_freeze_count() > 1000
    assert not any(obj is survivor for obj in gc.get_objects())  # frozen: never scanned
    tune_for_service()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)


@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_after_tuning_are_still_collected() -> None:
    tune_for_service()

    class Node:
        pass

    node = Node()
    node.self = node  # type: ignore[attr-defined]
    del node
    assert gc.collect() >= 1
