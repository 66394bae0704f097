"""One realm and one portal for every authenticated listener (PB and HTTP)."""

from twisted.cred import strcred
from twisted.cred.checkers import (
    AllowAnonymousAccess, ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import fail, maybeDeferred
from twisted.spread import pb
from twisted.web.resource import IResource
from zope.interface import implementer

from .errors import oneLine
from .pb.avatar import QueryPerspective
from .service import LogService

CHECKERS = "file:PATH, memory:USER:PASSWORD[:USER:PASSWORD...] or unix"


def checkerFromString(description: str) -> ICredentialsChecker:
    """
    The twisted.cred checker an C{--auth} value names, or a ValueError whose text is
    one line for the operator (shown after the value, or its kind).  strcred alone
    only warns about a password file it cannot read (and starts without those users)
    and reports a malformed C{memory:} argument as an unexpected error.
    """
    kind, _, argument = description.partition(":")
    if kind == "file":
        if not argument:
            raise ValueError("needs the path of a password file (USER:PASSWORD lines)")
        try:
            open(argument, "rb").close()
        except OSError as e:
            raise ValueError(f"cannot read it: {e.strerror or e}") from None
    elif kind == "memory":
        fields = argument.split(":")
        if len(fields) % 2 or not all(fields[::2]):
            # Not echoed: the argument holds passwords.
            raise ValueError("wants USER:PASSWORD pairs, as in memory:alice:secret:bob:other")
    try:
        return strcred.makeChecker(description)
    except strcred.InvalidAuthType:
        raise ValueError(f"unknown checker: use {CHECKERS}") from None
    except Exception as e:
        raise ValueError(oneLine(e)) from None


@implementer(IRealm)
class LogRealm:
    """Hands out a PB perspective or the HTTP resource tree over the shared service."""

    def __init__(self, service: LogService, webRoot=None):
        self.service = service
        self.webRoot = webRoot

    def requestAvatar(self, avatarId, mind, *interfaces) -> tuple:
        if pb.IPerspective in interfaces:
            avatar = QueryPerspective(self.service, avatarId)
            return pb.IPerspective, avatar, avatar.logout
        if IResource in interfaces and self.webRoot is not None:
            return IResource, self.webRoot, lambda: None
        raise NotImplementedError(f"no avatar for {interfaces}")


class LogPortal(Portal):
    """The shared portal, knowing whether PB clients must send the password itself."""

    passwordInClear = False


def makePortal(service: LogService, checkers: list, webRoot=None) -> LogPortal:
    """
    Checkers from --auth, any of which may accept a login; without any, anonymous
    access (loopback only, see tap).
    """
    checkers = [_bytesUsers(c) for c in checkers]
    portal = LogPortal(LogRealm(service, webRoot), [AnyOf(checkers)] if checkers
                       else [AllowAnonymousAccess()])
    portal.passwordInClear = any(_needsPassword(c) for c in checkers)
    return portal


def _needsPassword(checker: ICredentialsChecker) -> bool:
    """Whether it checks the password itself (as unix does), not PB's challenge answer."""
    offered = checker.credentialInterfaces
    return IUsernamePassword in offered and not (
        IUsernameHashedPassword in offered or pb.IUsernameMD5Password in offered)


@implementer(ICredentialsChecker)
class AnyOf:
    """
    Several --auth checkers as one: credentials are accepted by the first checker
    that takes their kind and accepts them.  A Portal alone keeps one checker per kind
    of credentials, the last given, so with C{--auth file:... --auth unix} the file's
    users could not log in over HTTP.
    """

    def __init__(self, checkers: list):
        self.checkers = checkers
        self.credentialInterfaces = tuple(dict.fromkeys(
            kind for checker in checkers for kind in checker.credentialInterfaces))

    def requestAvatarId(self, credentials):
        candidates = [checker for checker in self.checkers
                      if any(kind.providedBy(credentials)
                             for kind in checker.credentialInterfaces)]
        return self._first(None, credentials, candidates)

    def _first(self, refused, credentials, candidates: list):
        if refused is not None:
            refused.trap(UnauthorizedLogin)
        if not candidates:
            return refused or fail(UnhandledCredentials())
        checker, *rest = candidates
        return maybeDeferred(checker.requestAvatarId, credentials).addErrback(
            self._first, credentials, rest)


def _bytesUsers(checker: ICredentialsChecker) -> ICredentialsChecker:
    """
    strcred's C{memory:} checker keeps str names and passwords, but PB's challenge
    hashes bytes and HTTP basic auth presents bytes: store them as UTF-8 bytes.
    """
    if not isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        return checker
    converted = InMemoryUsernamePasswordDatabaseDontUse()
    for name, password in checker.users.items():
        converted.addUser(*(v.encode("utf-8") if isinstance(v, str) else v
                            for v in (name, password)))
    return converted
