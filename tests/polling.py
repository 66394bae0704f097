"""Waiting, always bounded, for what a server reaches asynchronously."""

import time


def waitFor(condition, what: str, timeout: float = 30):
    """Poll C{condition} until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
    return result


def unreadBytes(port: int) -> int:
    """Bytes waiting in the receive queues of the server's connections on C{port}."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
                    total += int(fields[4].split(":")[1], 16)
    return total


def waitUntilRead(port: int, timeout: float = 30) -> None:
    """Wait until the server has read everything its clients sent to C{port}."""
    waitFor(lambda: not unreadBytes(port), f"the server to read what was sent to {port}",
            timeout)
