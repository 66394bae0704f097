"""
The PB listener's login: the portal root a connection gets, and its server factory.

The avatar's methods are in L{logsvc.pb.avatar}; the realm that makes avatars is in
L{logsvc.auth}, shared with HTTP.
"""

from twisted.cred.credentials import ICredentials, UsernamePassword
from twisted.cred.error import LoginFailed
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from .avatar import BadRequest


class LoginRefused(pb.Error, LoginFailed):
    """
    Wrong name or password, or anonymous where --auth is required.  A pb.Error, so
    the server logs one line instead of a traceback, and still a cred
    C{LoginFailed} for callers that check for that.
    """


class _RefusalsAsErrors(Portal):
    """
    The shared portal, with failed logins turned into L{LoginRefused}.  A Portal
    subclass only so PB adapts it to its root; every call goes to the shared one.
    """

    log = Logger()

    def __init__(self, portal: Portal):
        self._portal = portal

    def login(self, credentials: ICredentials, mind, *interfaces) -> Deferred:
        return self._portal.login(credentials, mind, *interfaces).addErrback(
            self._refused, credentials)

    def _refused(self, failure: Failure, credentials: ICredentials) -> None:
        failure.trap(LoginFailed)
        who = getattr(credentials, "username", None) or "anonymous"
        self.log.info("PB login refused for {who!r}: {error}", who=who,
                      error=failure.value.__class__.__name__)
        raise LoginRefused("login refused")


@implementer(pb.IPBRoot)
class _Logins:
    """
    PB's own login, which answers a challenge with a hash of the password so the
    password never crosses the wire, and a login that sends the password itself, for
    checkers that need it: C{--auth unix} compares it with the system's password hash,
    and cannot check a challenge's answer.  HTTP basic authentication sends it the same
    way, so the same advice holds: use an C{ssl:} endpoint off loopback.
    """

    def __init__(self, portal: Portal):
        self.portal = _RefusalsAsErrors(portal)
        self._standard = pb.IPBRoot(self.portal)
        # Set by logsvc.auth.makePortal when a checker needs the password itself.
        self.passwordInClear: bool = getattr(portal, "passwordInClear", False)

    def rootObject(self, broker):
        return _LoginRoot(self, self._standard.rootObject(broker), broker)


class _LoginRoot(pb.Referenceable):
    """What a connection's C{getRootObject()} gets: PB's login methods and two more."""

    def __init__(self, logins: _Logins, standard, broker):
        self._logins = logins
        self._standard = standard
        self._broker = broker

    def remote_login(self, username):
        return self._standard.remote_login(username)

    def remote_loginAnonymous(self, mind):
        return self._standard.remote_loginAnonymous(mind)

    def remote_passwordInClear(self) -> bool:
        """Whether this server's checker needs L{remote_loginWithPassword}."""
        return self._logins.passwordInClear

    def remote_loginWithPassword(self, username=None, password=None, mind=None):
        if not (isinstance(username, bytes) and isinstance(password, bytes)):
            raise BadRequest("loginWithPassword takes a user name and a password as bytes")
        login = self._logins.portal.login(UsernamePassword(username, password), mind,
                                          pb.IPerspective)
        return login.addCallback(self._loggedIn)

    def _loggedIn(self, result):
        _, avatar, logout = result
        self._broker.notifyOnDisconnect(logout)
        return pb.AsReferenceable(avatar, "perspective")


def serverFactory(portal: Portal) -> pb.PBServerFactory:
    """The PB listener's factory over the shared portal; tracebacks never cross the wire."""
    return pb.PBServerFactory(_Logins(portal), unsafeTracebacks=False)
