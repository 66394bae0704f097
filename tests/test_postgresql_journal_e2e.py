"""
The journal's end-to-end tests (both dialects, concurrency, retries across restarts, the
npm tcp-log-client, the slow reader, kill -9 and the kill -9 loop), unchanged, against a
real ``twistd`` on PostgreSQL: each test gets a database of its own.
"""

import pytest

from tests import test_crashloop, test_journal_e2e
from tests.postgres import sharedCluster, skipUnlessAvailable
from tests.test_crashloop import test_fiftyKillNineCycles  # noqa: F401
from tests.test_journal_e2e import *  # noqa: F401,F403


@pytest.fixture(autouse=True)
def postgresqlStore(monkeypatch):
    skipUnlessAvailable()
    uri = sharedCluster().database()
    monkeypatch.setattr(test_journal_e2e, "STORE", uri)
    monkeypatch.setattr(test_crashloop, "STORE", uri)
    return uri
