"""
``logsvc-query``: the ready-made Perspective Broker client of logsvc's remote queries.

Every failure the user can cause or meet (server down, login refused, unknown client,
bad arguments) ends as one line on stderr and a non-zero exit, never a traceback.
"""

import getopt
import getpass
import json
import os
import sys
from datetime import datetime

from twisted.cred import credentials
from twisted.cred.error import LoginFailed
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.spread import pb

from . import __version__
from .errors import NoSuchClient
from .options import localEndpoint, positiveInteger
from .pb.avatar import READ_LIMIT, BadRequest, JournalError, TrimmedError
from .subscription import LINE_EVENTS, eventKinds

DEFAULT_CONNECT = "tcp:127.0.0.1:8787"
CLIENTS_PAGE = 100
"""Clients asked for per PB call: 100 full rings of 100-byte lines are about 1.6 MB."""


class QueryFailed(Exception):
    """A one-line explanation for the user."""


def localTime(seconds: float | None) -> str:
    """Epoch seconds as a local ISO 8601 time with its UTC offset."""
    if not isinstance(seconds, (int, float)):
        return "-"
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


PROGRAM = "logsvc-query"

CONNECTION_OPTIONS = [
    ["connect", None, None,
     "Server PB endpoint (a Twisted client endpoint string; a bare number means "
     f"tcp:127.0.0.1:N). [default: {DEFAULT_CONNECT}]"],
    ["user", "u", None, "User name (anonymous without it)."],
    ["password", "p", None, "Password (prefer LOGSVC_PASSWORD or the prompt)."],
]


def _printVersion(self):
    """Print the version and exit."""
    print(__version__)
    sys.exit(0)


class _Command(usage.Options):
    """
    A subcommand.  Its options, and the connection options and --json, may come before
    or after its arguments, as argparse and git allow; C{--} ends the options.
    """

    parent: usage.Options  # the command line it is a subcommand of
    synopsis = "[options]"
    optFlags = [["json", "j", "Machine output (JSON)."]]
    optParameters = CONNECTION_OPTIONS
    opt_version = _printVersion

    def parseOptions(self, options=None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            found, arguments = getopt.gnu_getopt(options, self.shortOpt, self.longOpt)
        except getopt.error as e:
            raise usage.UsageError(str(e))
        ordered = []
        for option, value in found:
            if option.startswith("--"):
                takesValue = option[2:] + "=" in self.longOpt
                ordered.append(f"{option}={value}" if takesValue else option)
            else:
                ordered.append(option + value)
        super().parseOptions(ordered + ["--"] + arguments)

    def getSynopsis(self) -> str:
        return f"Usage: {PROGRAM} [options] {self.parent.subCommand} {self.synopsis}".rstrip()


class _NameOptions(_Command):
    def parseArgs(self, name):
        self["name"] = name


class LogOptions(_NameOptions):
    synopsis = "[options] NAME"
    longdesc = "Print the recent lines a client logged, oldest first."


class StateOptions(_NameOptions):
    synopsis = "[options] NAME"
    longdesc = "Print a client's state (its SET keys and values)."


class ClientsOptions(_Command):
    longdesc = "List every client the server remembers, online and offline."


class WatchOptions(_Command):
    longdesc = "Print events as they happen, until Ctrl-C."
    optParameters = [
        ["client", "c", None, "Only clients whose name matches this glob (e.g. 'api-*')."],
        ["events", "e", ",".join(LINE_EVENTS),
         "Comma-separated event kinds: ready, log, set, close, entry (journal entries)."],
        ["from", None, None, "Replay journal entries from this index first (adds 'entry')",
         positiveInteger("--from")],
    ]
    optParameters += CONNECTION_OPTIONS

    def postOptions(self):
        kinds = [k.strip() for k in self["events"].split(",") if k.strip()]
        try:
            eventKinds(kinds)
        except ValueError as e:
            raise usage.UsageError(str(e))
        if self["from"] is not None and "entry" not in kinds:
            kinds.append("entry")
        self["events"] = kinds


class ReadOptions(_Command):
    synopsis = "[options] FROM"
    longdesc = ("Print journal entries from index FROM up to the head, or at most --limit "
                "entries.")
    optParameters = [["limit", "n", None, "Print at most this many entries",
                      positiveInteger("--limit")]] + CONNECTION_OPTIONS

    def parseArgs(self, start):
        self["from"] = positiveInteger("FROM")(start)


class StatusOptions(_Command):
    longdesc = "Print the journal's first index kept and its head (last index)."


class AppendOptions(_Command):
    synopsis = "[options] JSON"
    longdesc = "Append one JSON object to the journal and print its index."

    def parseArgs(self, entry):
        try:
            self["entry"] = json.loads(entry)
        except ValueError as e:
            raise usage.UsageError(f"the entry is not JSON: {e}")
        if not isinstance(self["entry"], dict):
            raise usage.UsageError("the entry must be a JSON object")


class Options(usage.Options):
    synopsis = (f"Usage: {PROGRAM} [options] clients | log NAME | state NAME | watch "
                "| read FROM | status | append JSON")
    longdesc = ("Query a logsvc server over Perspective Broker. The password may also come "
                "from LOGSVC_PASSWORD, or is asked for on a terminal.")
    optParameters = CONNECTION_OPTIONS
    optFlags = [["json", "j", "Machine output: JSON (one document, or one line per item "
                              "for read and watch)."]]
    subCommands = [
        ["clients", None, ClientsOptions, "List clients."],
        ["log", None, LogOptions, "A client's recent lines."],
        ["state", None, StateOptions, "A client's state."],
        ["watch", None, WatchOptions, "Follow events live."],
        ["read", None, ReadOptions, "Read the journal."],
        ["status", None, StatusOptions, "The journal's first index and head."],
        ["append", None, AppendOptions, "Append a journal entry."],
    ]

    opt_version = _printVersion

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("give a command: clients, log, state, watch, read, status "
                                   "or append")
        for name in ("connect", "user", "password"):
            if self.subOptions[name] is not None:
                self[name] = self.subOptions[name]
        self["connect"] = localEndpoint(self["connect"] or DEFAULT_CONNECT)
        self["json"] = self["json"] or self.subOptions["json"]


def loginCredentials(options: Options, environ=os.environ, stdin=sys.stdin,
                     ask=getpass.getpass) -> credentials.ICredentials:
    """Anonymous without --user; else the password from the option, environment or a prompt."""
    user = options["user"]
    if user is None:
        return credentials.Anonymous()
    password = options["password"]
    if password is None:
        password = environ.get("LOGSVC_PASSWORD")
    if password is None:
        if not stdin.isatty():
            raise usage.UsageError("--user needs a password: give --password, set "
                                   "LOGSVC_PASSWORD, or run on a terminal to be asked")
        password = ask(f"Password for {user}: ")
    return credentials.UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))


def logIn(factory: pb.PBClientFactory, login: credentials.ICredentials) -> Deferred:
    """
    PB's challenge and response, unless the server's checker needs the password itself
    (C{--auth unix}): then the password is sent, as HTTP basic authentication would.
    A Deferred chain, not a coroutine, so that a refusal reaches L{_explain} as PB's
    failure rather than as the C{RemoteError} PB raises into coroutines.
    """
    if not isinstance(login, credentials.UsernamePassword):
        return factory.login(login)

    def chosen(inClear: bool, root):
        if inClear:
            return root.callRemote("loginWithPassword", login.username, login.password)
        return factory.login(login)

    return factory.getRootObject().addCallback(
        lambda root: root.callRemote("passwordInClear").addCallback(chosen, root))


def _explain(failure):
    """Turn a local or remote failure into a L{QueryFailed} the user can read."""
    message = failure.getErrorMessage()
    if failure.check(QueryFailed):
        return failure
    if failure.check(NoSuchClient, BadRequest, JournalError):
        raise QueryFailed(message)
    if failure.check(LoginFailed):
        raise QueryFailed("login refused")
    if failure.check(pb.PBConnectionLost, pb.DeadReferenceError, ConnectionLost, ConnectionDone):
        raise QueryFailed("connection to the server lost")
    kind = failure.type if isinstance(failure.type, str) else failure.type.__name__
    raise QueryFailed(" ".join(f"{kind.rsplit('.', 1)[-1]}: {message}".split()))


def _remote(perspective, method: str, *args, **kwargs) -> Deferred:
    return perspective.callRemote(method, *args, **kwargs).addErrback(_explain)


class Output:
    """Human-readable aligned text, or JSON, on a stream that is flushed per line."""

    def __init__(self, asJSON: bool, stream=None):
        self.json = asJSON
        self._stream = stream or sys.stdout

    def line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def document(self, value) -> None:
        self.line(json.dumps(value, ensure_ascii=False, sort_keys=True))

    def table(self, rows: list) -> None:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
            self.line("  ".join(cells).rstrip())


def _oneLineValue(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


async def showClients(reactor: IReactorCore, perspective: pb.RemoteReference,
                      options: Options, out: Output) -> None:
    clients, after = {}, None
    while True:     # in pages, so that no one answer keeps the server busy for long
        page = await _remote(perspective, "clients", after, CLIENTS_PAGE)
        clients.update(page)
        if len(page) < CLIENTS_PAGE:
            break
        after = max(page)
    if out.json:
        return out.document(clients)
    if not clients:
        return out.line("no clients")
    rows = [["NAME", "ONLINE", "CONNECTED", "LINES", "STATE"]]
    for name in sorted(clients):
        info = clients[name]
        state = " ".join(f"{k}={_oneLineValue(v)}"
                         for k, v in sorted(info.get("state", {}).items()))
        rows.append([name, "yes" if info.get("online") else "no",
                     localTime(info.get("connectedAt")),
                     str(info.get("counters", {}).get("lines", len(info.get("log", [])))), state])
    out.table(rows)


async def showLog(reactor: IReactorCore, perspective: pb.RemoteReference,
                  options: Options, out: Output) -> None:
    lines = await _remote(perspective, "clientLog", options["name"])
    if out.json:
        return out.document(lines)
    for time, message in lines:
        out.line(f"{localTime(time)}  {message}")


async def showState(reactor: IReactorCore, perspective: pb.RemoteReference,
                    options: Options, out: Output) -> None:
    state = await _remote(perspective, "clientState", options["name"])
    if out.json:
        return out.document(state)
    if state:
        out.table([[key, _oneLineValue(value)] for key, value in sorted(state.items())])


def _entryLine(item: dict, out: Output) -> None:
    if out.json:
        return out.document(item)
    body = item["entry"] if "entry" in item else {"error": item.get("error")}
    out.line(f"{item['index']}  {json.dumps(body, ensure_ascii=False, sort_keys=True)}")


def _trimmedRead(failure):
    failure.trap(TrimmedError)


async def journalBounds(perspective: pb.RemoteReference) -> dict:
    return {"first": await _remote(perspective, "first"),
            "head": await _remote(perspective, "head")}


def _trimmedLine(bounds: dict, out: Output) -> None:
    """The gap retention made, said where the entries go (JSON) or on stderr."""
    if out.json:
        return out.document({"trimmed": bounds})
    sys.stderr.write(f"-- entries before {bounds['first']} were deleted by retention "
                     f"(head {bounds['head']}); reading from {bounds['first']} --\n")
    sys.stderr.flush()


async def readJournal(reactor: IReactorCore, perspective: pb.RemoteReference,
                      options: Options, out: Output) -> None:
    """
    Page through the journal: the server caps each answer, so ask again from the last
    + 1.  Below the first index kept, say so, then go on from it.
    """
    start, remaining = options["from"], options["limit"]
    while remaining is None or remaining > 0:
        page = await perspective.callRemote(
            "read", start, READ_LIMIT if remaining is None else min(remaining, READ_LIMIT)
        ).addErrback(_trimmedRead).addErrback(_explain)
        if page is None:
            bounds = await journalBounds(perspective)
            _trimmedLine(bounds, out)
            start = max(start, bounds["first"])
            continue
        if not page:
            break
        for item in page:
            _entryLine(item, out)
        start = page[-1]["index"] + 1
        if remaining is not None:
            remaining -= len(page)


async def showStatus(reactor: IReactorCore, perspective: pb.RemoteReference,
                     options: Options, out: Output) -> None:
    bounds = await journalBounds(perspective)
    if out.json:
        return out.document(bounds)
    out.table([["first", str(bounds["first"])], ["head", str(bounds["head"])]])


async def appendEntry(reactor: IReactorCore, perspective: pb.RemoteReference,
                      options: Options, out: Output) -> None:
    index = await _remote(perspective, "append", options["entry"])
    out.document({"index": index}) if out.json else out.line(str(index))


class WatchObserver(pb.Referenceable):
    """Prints each event the server pushes; C{finished} fails when the watch must stop."""

    def __init__(self, out: Output):
        self.out = out
        self.finished: Deferred = Deferred()
        self.stopping = False

    def remote_event(self, kind: str, payload: dict) -> None:
        if kind == "end":
            if not self.finished.called:
                self.finished.errback(QueryFailed(
                    f"unsubscribed by the server: {payload.get('reason')}"))
            return
        if self.out.json:
            return self.out.document(payload)
        if kind == "entry":
            return _entryLine(payload, self.out)
        if kind == "trimmed":
            return self.out.line(f"-- entries before {payload['first']} were deleted by "
                                 f"retention (head {payload['head']}); going on from "
                                 f"{payload['first']} --")
        if kind == "dropped":
            return self.out.line(
                f"-- {payload['dropped']} events dropped: this watch fell behind --")
        detail = {"ready": "connected", "close": "disconnected",
                  "log": payload.get("message", ""),
                  "set": f"{payload.get('key')}={payload.get('value')}"}.get(kind, "")
        self.out.line(f"{localTime(payload.get('time'))}  {payload.get('client', ''):<20}  "
                      f"{kind:<5}  {detail}".rstrip())

    def stop(self) -> None:
        """Ctrl-C: the reactor is shutting down, which is how a watch ends normally."""
        self.stopping = True

    def lost(self, broker=None) -> None:
        if self.finished.called:
            return
        if self.stopping:
            self.finished.callback(None)
        else:
            self.finished.errback(QueryFailed("connection to the server lost"))


async def watch(reactor: IReactorCore, perspective: pb.RemoteReference,
                options: Options, out: Output) -> None:
    observer = WatchObserver(out)
    reactor.addSystemEventTrigger("before", "shutdown", observer.stop)
    perspective.notifyOnDisconnect(observer.lost)
    await _remote(perspective, "subscribe", observer, events=options["events"],
                  clients=options["client"], fromIndex=options["from"])
    sys.stderr.write("watching; Ctrl-C to stop\n")
    sys.stderr.flush()
    await observer.finished


COMMANDS = {"clients": showClients, "log": showLog, "state": showState,
            "watch": watch, "read": readJournal, "status": showStatus,
            "append": appendEntry}


async def run(reactor: IReactorCore, options: Options,
              login: credentials.ICredentials) -> None:
    """Connect, log in, run the subcommand; every failure becomes one line and exit 1."""
    factory = pb.PBClientFactory()
    try:
        endpoint = clientFromString(reactor, options["connect"])
    except Exception as e:
        # Also an unreadable caCertsDir, or a file in it that is not a PEM certificate.
        e = getattr(e, "originalException", e)
        raise SystemExit(f"logsvc-query: --connect {options['connect']!r}: "
                         f"{' '.join(str(e).split()) or e.__class__.__name__}")
    try:
        broker = await endpoint.connect(factory)
    except Exception as e:
        raise SystemExit(f"logsvc-query: cannot connect to {options['connect']}: "
                         f"{' '.join(str(e).split()) or e.__class__.__name__}")
    # Endpoints never call clientConnectionLost: without this, a server that closes
    # before PB is ready (at --max-connections, or a refused TLS handshake) would leave
    # the login waiting forever.
    broker.notifyOnDisconnect(lambda: factory.clientConnectionLost(
        None, Failure(ConnectionLost("closed by the server before login"))))
    assert options.subCommand is not None  # Options.postOptions refuses none
    try:
        perspective = await logIn(factory, login).addErrback(_explain)
        await COMMANDS[options.subCommand](reactor, perspective, options.subOptions,
                                           Output(options["json"]))
    except QueryFailed as e:
        if str(e) == "login refused" and isinstance(login, credentials.Anonymous):
            e = QueryFailed("login refused: this server needs --user")
        raise SystemExit(f"logsvc-query: {e}")
    finally:
        factory.disconnect()


def main(argv: list | None = None) -> None:
    """The console script: parse, ask for a password if needed, then run on the reactor."""
    options = Options()
    try:
        options.parseOptions(argv)
        login = loginCredentials(options)
    except usage.UsageError as e:
        sys.stderr.write(f"logsvc-query: {e} (see logsvc-query --help)\n")
        sys.exit(2)
    except (KeyboardInterrupt, EOFError):
        sys.stderr.write("\n")
        sys.exit(130)
    react(run, [options, login])


if __name__ == "__main__":
    main()
