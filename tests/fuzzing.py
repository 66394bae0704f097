"""Splitting a byte stream the way TCP may, for the property-based tests."""


def cut(data: bytes, points: list) -> list:
    """Split C{data} at the given relative points."""
    offsets = sorted({int(p * len(data)) for p in points})
    pieces, start = [], 0
    for offset in offsets + [len(data)]:
        pieces.append(data[start:offset])
        start = offset
    return [p for p in pieces if p]
