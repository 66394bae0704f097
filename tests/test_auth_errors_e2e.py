"""
An --auth checker that cannot be built stops a real ``twistd`` at start-up with one line
naming the option and exit status 1: it never starts without the users meant to log in.
"""

import os

import pytest

from tests.server import startupError

LISTENERS = ("--journal", "none", "--pb", "none", "--http", "none")


def assertRefused(auth: str, expected: str) -> None:
    """Exit 1, no traceback, and this one line on stderr (see startupError)."""
    assert startupError("--store", "memory:", "--port", "tcp:0:interface=127.0.0.1",
                        *LISTENERS, "--auth", auth) == f"logatron: {expected}"


@pytest.mark.parametrize("auth, expected", [
    ("file:/nonexistent", "--auth file:/nonexistent: cannot read it: No such file or directory"),
    ("file:", "--auth file: needs the path of a password file (USER:PASSWORD lines)"),
    ("memory:alice", "--auth memory: wants USER:PASSWORD pairs, as in "
                     "memory:alice:secret:bob:other"),
    ("memory:alice:secret:bob", "--auth memory: wants USER:PASSWORD pairs, as in "
                                "memory:alice:secret:bob:other"),
    ("memory:", "--auth memory: wants USER:PASSWORD pairs, as in "
                "memory:alice:secret:bob:other"),
    ("ldap:server", "--auth ldap: unknown checker: use file:PATH, "
                    "memory:USER:PASSWORD[:USER:PASSWORD...] or unix"),
    ("anonymous", "--auth anonymous: does not check user names and passwords"),
])
def test_badAuthIsOneLine(auth, expected):
    assertRefused(auth, expected)


def test_passwordFileThatIsADirectory(tmp_path):
    assertRefused(f"file:{tmp_path}", f"--auth file:{tmp_path}: cannot read it: Is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadablePasswordFile(tmp_path):
    passwords = tmp_path / "passwords"
    passwords.write_text("alice:secret\n")
    passwords.chmod(0)
    assertRefused(f"file:{passwords}",
                  f"--auth file:{passwords}: cannot read it: Permission denied")


def test_memoryPasswordsAreNotEchoed():
    assert "hunter2" not in startupError("--store", "memory:", *LISTENERS,
                                         "--auth", "memory:alice:hunter2:bob")
