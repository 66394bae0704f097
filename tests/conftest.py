import shutil
import subprocess
import sys

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.pages import chromium
from tests.postgres import sharedCluster, skipUnlessAvailable
from tests.server import Servers


@pytest.fixture
def twistd(tmp_path):
    """Starts real twistd servers; fails the test if one broke (see tests/server.py)."""
    with Servers(tmp_path) as start:
        yield start


@pytest.fixture
def pageServer(twistd):
    """A twistd with the line service and the status page, on the memory store."""
    return twistd(store="memory:", listeners=("port", "http"))


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium for this test; tests using it need C{tests.pages.needsChromium}."""
    driver = chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


@pytest.fixture
def tinyDisk(tmp_path):
    """A 32 MiB tmpfs mounted for this test only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot create a small filesystem to fill")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs",
                              str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    + " ".join(mounted.stderr.split()))
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def journalStore(request):
    """
    The store a journal end-to-end test runs on: None for twistd's SQLite file in the
    test's directory, or a fresh database of the shared PostgreSQL cluster.
    """
    if request.param == "sqlite":
        return None
    skipUnlessAvailable()
    return sharedCluster().database()


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
