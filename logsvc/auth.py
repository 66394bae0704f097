"""One realm and one portal for every authenticated listener (PB and HTTP)."""

from twisted.cred.checkers import AllowAnonymousAccess, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.spread import pb
from twisted.web.resource import IResource
from zope.interface import implementer


@implementer(IRealm)
class LogRealm:
    """Hands out a PB perspective or the HTTP resource tree over the shared service."""

    def __init__(self, service):
        self.service = service

    def requestAvatar(self, avatarId, mind, *interfaces):
        if pb.IPerspective in interfaces:
            from .pb import QueryPerspective
            avatar = QueryPerspective(self.service, avatarId)
            return pb.IPerspective, avatar, avatar.logout
        if IResource in interfaces:
            from .web import rootResource
            return IResource, rootResource(self.service), lambda: None
        raise NotImplementedError(f"no avatar for {interfaces}")


def makePortal(service, checkers: list) -> Portal:
    """Checkers from --auth; without any, anonymous access (loopback only, see tap)."""
    return Portal(LogRealm(service), [_bytesUsers(c) for c in checkers]
                  or [AllowAnonymousAccess()])


def _bytesUsers(checker):
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
