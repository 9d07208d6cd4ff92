"""Fixtures shared by the run/status integration tests."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_run_support import load_images, remove_containers


@pytest.fixture(scope="module")
def run_images(testbed: Any) -> Iterator[None]:
    """The run tests' images on every host they use."""
    load_images(testbed)
    yield


@pytest.fixture
def names(testbed: Any, run_images: None) -> Iterator[list[str]]:
    """Container names a test creates; removed from every host afterwards."""
    made: list[str] = []
    yield made
    remove_containers(testbed, made)
