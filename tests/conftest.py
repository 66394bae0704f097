import sys

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.server import Servers


@pytest.fixture
def twistd(tmp_path):
    """Starts real twistd servers; fails the test if one broke (see tests/server.py)."""
    with Servers(tmp_path) as start:
        yield start


@pytest.fixture(autouse=True)
def _switchIntervalRestored():
    """Fail a test that leaves the interpreter's thread switch interval changed."""
    before = sys.getswitchinterval()
    yield
    after = sys.getswitchinterval()
    sys.setswitchinterval(before)
    assert after == before, "sys.setswitchinterval was not restored (see tests/services.py)"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """
    A trial TestCase spins the reactor itself, which it cannot once a pytest-twisted
    test has left the reactor running in its greenlet: run trial TestCases first.  The
    sort is stable and runs after pytest-random-order's shuffle, which it keeps within
    each group.
    """
    items.sort(key=lambda item: not _isTrialTestCase(item))


def _isTrialTestCase(item) -> bool:
    testClass = getattr(item, "cls", None)
    return isinstance(testClass, type) and issubclass(testClass, SynchronousTestCase)
