"""What a PB caller of a real ``twistd`` reads when it asks about an unknown client."""

import subprocess
import sys

CALLER = """
import sys
from twisted.cred.credentials import Anonymous
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import react
from twisted.spread import pb

async def main(reactor, port, method):
    factory = pb.PBClientFactory()
    await clientFromString(reactor, f"tcp:127.0.0.1:{port}").connect(factory)
    avatar = await factory.login(Anonymous())
    try:
        await avatar.callRemote(method, "web-9")
    except pb.RemoteError as e:     # how a remote error reaches an await
        print(e.remoteType.decode(), "|", e)
    finally:
        factory.disconnect()

react(main, sys.argv[1:])
"""


def test_remoteNoSuchClientSaysWhatItIs(twistd):
    server = twistd(store="memory:", listeners=("port", "pb"))
    for method in ("clientLog", "clientState"):
        result = subprocess.run([sys.executable, "-c", CALLER, str(server.ports["pb"]), method],
                                capture_output=True, text=True, timeout=60)
        assert result.stdout == "logsvc.errors.NoSuchClient | no such client: web-9\n", \
            result.stdout + result.stderr
