"""
This node's copy of the retry window every node shares, and the chunk rows (with
their write ids) a commit stores: what gives a retry its original index on any node.
"""

import json
import threading

from ..store import DIGEST, RecentWrites, chunkSpans


def chunkRows(first: int, entries: list, digests: list, identified: list) -> dict:
    """L{STORE}'s chunk arrays for consecutive entries from index C{first}, with the
    (index, write id) of those C{identified}, in index order."""
    rows: dict = {"firsts": [], "counts": [], "digests": [], "data": [], "ids": []}
    for start, end, _, _, ids in chunkSpans(first, entries, identified):
        rows["firsts"].append(first + start)
        rows["counts"].append(end - start)
        rows["digests"].append(b"".join(digests[start:end]))
        rows["data"].append(b"\n".join(entries[start:end]))
        rows["ids"].append(json.dumps(ids) if ids else None)
    return rows


def identifiedWrites(rows) -> dict:
    """(write id, digest) -> index of the (first, digests, ids) rows of chunks."""
    writes = {}
    for first, digests, ids in rows:
        for index, writeId in json.loads(ids):
            at = (index - first) * DIGEST
            writes[writeId, bytes(digests[at:at + DIGEST])] = index
    return writes


class RetryWindow:
    """
    This node's copy of the shared retry window: at least the last L{RECENT_WRITES}
    identified writes of every node, among all of those up to index C{covered}.  The
    writer thread adds its own commits and, in each commit's transaction, the chunks
    committed after C{covered}; the listening thread adds other nodes' chunks as it
    reads them, so that what a commit reads is usually only the last few ms.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recent = RecentWrites()
        self.covered = 0
        self._ahead: list = []  # (first, last) of known ranges beyond covered + 1

    def add(self, first: int, last: int, writes: dict) -> None:
        """Every identified write from C{first} to C{last} is in C{writes}."""
        with self.lock:
            self.recent.update(writes)
            spans: list = []
            for start, end in sorted(self._ahead + [(first, last)]):
                if spans and start <= spans[-1][1] + 1:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], end))
                else:
                    spans.append((start, end))
            while spans and spans[0][0] <= self.covered + 1:
                self.covered = max(self.covered, spans.pop(0)[1])
            self._ahead = spans
