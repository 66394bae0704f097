"""Test helpers for journal stores."""


def appendOne(store, data: bytes, writeId: str | None = None):
    """Append one entry; the Deferred fires with its index."""
    appended = store.append([data], None if writeId is None else [writeId])
    return appended.addCallback(lambda indices: indices[0])
