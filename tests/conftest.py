import pytest
from _pytest.unittest import TestCaseFunction

from tests.server import Servers


@pytest.fixture
def twistd(tmp_path):
    """Starts real twistd servers; fails the test if one broke (see tests/server.py)."""
    with Servers(tmp_path) as start:
        yield start


def pytest_collection_modifyitems(items):
    """
    Trial TestCases run the reactor themselves, while pytest-twisted keeps it running in a
    greenlet from its first test on: run every TestCase before any pytest function.
    """
    items.sort(key=lambda item: not isinstance(item, TestCaseFunction))
