"""
The seams of logsvc: the client registry, its event observers and the journal store.

Every listener (line, journal, PB, HTTP) talks to these interfaces only, so one
implementation can replace another (the memory, SQLite and PostgreSQL stores).
"""

from zope.interface import Attribute, Interface


class IEventObserver(Interface):
    """Receives line-service events as they happen, in order."""

    def logged(name: str, time: float, messages: list, truncated: bool,
               fields: list | None = None) -> None:
        """
        LOG lines of one client received together (already trimmed str), as one call:
        equivalent to one C{log} event per message, with C{"truncated": True} in each
        when C{truncated}, and C{fields[i]} in message i's when given (syslog messages'
        severity, facility, ...; only then is the argument passed).  Must not raise
        and must not block.
        """

    def event(kind: str, name: str, time: float, fields: dict) -> None:
        """
        One event: C{kind} is C{"ready"}, C{"set"} or C{"close"} (LOG lines come
        through L{logged}); C{name} the client; C{time} epoch seconds; C{fields} is
        C{{}} for ready/close and C{{"key": str, "value": str}} for set.  Must not raise
        and must not block.
        """


class IClientRegistry(Interface):
    """Per-name client records (ring of recent lines, state, counters) and the event hub."""

    totalLines = Attribute("LOG lines received since start, over all clients.")
    bufferSize = Attribute("How many recent lines each record's ring keeps.")
    observed = Attribute(
        "True while an observer listens: callers may then not drop lines that cannot "
        "reach the ring, since every line is an event.")

    def connect(name: str):
        """
        Mark C{name} online and return its L{ClientRecord}, keeping the ring of an
        offline record and emptying its state.  Raise L{NameInUse} if it is online.
        """

    def claim(name: str):
        """
        L{connect} once no other node sharing the store has C{name} online: a
        Deferred firing with the record or failing with L{NameInUse}.
        """

    def disconnect(record) -> None:
        """Mark the record offline and emit C{close}."""

    def log(record, time: float, messages: list, received: int | None = None,
            truncated: bool = False, fields: list | None = None) -> None:
        """
        Store LOG lines (already trimmed str) received together and hand them to
        every observer's C{logged}.  C{received} is how many lines arrived when the
        caller passes only the last C{bufferSize} (nobody observes the rest);
        C{fields}, one dict per message, go to the observers with them.
        """

    def set(record, time: float, key: str, value: str) -> None:
        """Set one state key and emit C{set}."""

    def lookup(name: str):
        """Return the record for C{name}, online or offline; raise L{NoSuchClient}."""

    def onlineNames() -> list:
        """Names of connected clients, sorted."""

    def records(after: str | None = None, limit: int | None = None) -> list:
        """
        Records, online and offline, sorted by name: every one, or with C{limit} at
        most that many whose names sort after C{after} (a page).
        """

    def counts() -> dict:
        """C{{"online": n, "offline": m}}: how many records of each kind are kept."""

    def totals() -> dict:
        """
        C{lines}, C{sets}, C{bytes}, C{ignored} and C{truncated} over every client
        since start, evicted ones included.
        """

    def restore(name: str, saved: dict) -> None:
        """Add an offline record as L{takeChanges} gave it before a restart."""

    def takeChanges() -> tuple:
        """
        C{([(name, saved form)], [evicted names])}: what changed since the last call,
        for persistence.
        """

    def unsaved(names: list, gone: list) -> None:
        """A save of L{takeChanges}' result failed: give these again next time."""

    def addObserver(observer: IEventObserver, localOnly: bool = False) -> None:
        """
        Deliver every later event to C{observer}, those of clients on other nodes
        too unless C{localOnly}.
        """

    def removeObserver(observer: IEventObserver) -> None:
        """Stop delivering events to C{observer}; unknown observers are ignored."""


class IFollowing(Interface):
    """What L{IJournalStore.follow} returns."""

    def cancel() -> None:
        """Stop the calls to the callback."""


class IJournalStore(Interface):
    """
    Durable append-only storage of canonical-JSON entries with dense indices from 1.

    Entries are passed and returned as the UTF-8 bytes of their canonical JSON, so no
    layer re-encodes them.  Every method that touches storage returns a Deferred and
    never blocks the reactor.
    """

    journalId = Attribute("The journal's id (a UUID string, set once open): it changes "
                          "only when the journal is replaced by another.")

    def open():
        """
        Open (creating if needed) the storage. Returns a Deferred that fires with None
        when ready, or fails with L{StoreError} saying why in one line.
        """

    def close():
        """Commit everything appended so far, then release the storage. Deferred."""

    def append(entries: list, writeIds: list | None = None):
        """
        Append entries (in order, with consecutive indices unless a retry is among
        them). Returns one Deferred firing with the list of their indices once all are
        durable, or failing with L{StoreError}.  C{writeIds}, when given, has one id
        (or None) per entry: an entry whose id and data repeat one of the last 100,000
        identified writes gets that write's index instead of a new one.  Batches are
        how callers share a commit cheaply: a chunk of lines is one call.
        """

    def head():
        """
        Deferred firing with the last committed index (0 when empty).  It never
        shrinks, across restarts too, even when retention has deleted every entry.
        """

    def first():
        """
        Deferred firing with the lowest index still stored (C{head() + 1} when every
        entry was deleted, 1 for a new journal).  It only grows, across restarts too;
        indices below it are never given out again.
        """

    def read(start: int, limit: int):
        """
        Deferred firing with up to C{limit} committed C{(index, data)} pairs from
        C{start} on, in order.  An entry that cannot be read back is returned as
        C{(index, EntryError)} so one bad entry does not hide the rest.  When
        C{start} is below L{first}, fails with L{Trimmed} (carrying C{first} and
        C{head}) rather than returning later entries, so no reader skips entries
        without being told; the check and the read see one consistent state.
        """

    def trim(retention, now: float):
        """
        Apply a L{Retention} (C{now} in epoch seconds): delete the oldest entries, in
        whole batches of the store's choosing, while every limit would still be met
        without them, i.e. keep at least C{retention.entries} entries, every entry
        committed after C{now - retention.seconds}, and at least C{retention.bytes}
        bytes of stored data.  Runs off the reactor thread and interleaved with
        commits, so appends are not stalled behind it.  An entry stored once for
        several indices stays readable at every index kept; write ids of deleted
        entries stay in the retry window (a retry still gets its original index).
        Commit times are kept as a sparse record of (commit time, first index of the
        commit), at most about a second apart, so age needs no scan.  Deferred firing
        with C{(first before, first after)}.
        """

    def follow(callback) -> IFollowing:
        """
        Call C{callback(batch)} on the reactor thread for every batch of entries that
        becomes committed, C{batch} being a list of C{(index, data)} in index order,
        including entries appended by other processes sharing the store.  Returns an
        object whose C{cancel()} stops the calls.
        """

    def check():
        """
        Deferred firing with None if the store can be written now, else failing: also
        while the last commit of entries failed and none has succeeded since.
        """

    def deduplicationLag():
        """
        Deferred firing with how many committed entries have yet to be checked for an
        earlier identical copy (0 for a store that deduplicates as it appends).
        """

    def addCommitObserver(observer) -> None:
        """Call C{observer(seconds, count)} after each commit, for metrics."""
