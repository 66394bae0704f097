"""
The implementations' signatures against their interfaces: parameter names, kinds and
defaults, which zope's C{verifyObject} does not compare (it checks names and arity).
"""

import inspect

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.interface import Method
from zope.interface.verify import verifyObject

from logsvc.interfaces import IClientRegistry, IEventObserver, IJournalStore
from logsvc.journal.lines import JournalLines
from logsvc.postgresql import PostgreSQLStore
from logsvc.registry import ClientRegistry
from logsvc.sqlite import SQLiteStore
from logsvc.memorystore import MemoryStore
from logsvc.subscription import Subscription


def interfaceSignature(method: Method) -> inspect.Signature:
    """
    The signature zope recorded for an interface method: it keeps no function, only
    positional names, defaults, *args and **kwargs (so interfaces use no other kinds).
    """
    info = method.getSignatureInfo()
    Parameter = inspect.Parameter
    parameters = [Parameter(name, Parameter.POSITIONAL_OR_KEYWORD,
                            default=info["optional"].get(name, Parameter.empty))
                  for name in info["positional"]]
    if info["varargs"]:
        parameters.append(Parameter(info["varargs"], Parameter.VAR_POSITIONAL))
    if info["kwargs"]:
        parameters.append(Parameter(info["kwargs"], Parameter.VAR_KEYWORD))
    return inspect.Signature(parameters)


def implementationSignature(implementation, name: str) -> inspect.Signature:
    """A method's signature as callers see it: without C{self}, also on a class."""
    signature = inspect.signature(getattr(implementation, name))
    if isinstance(implementation, type):
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    return signature


def _shape(signature: inspect.Signature) -> list:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def mismatches(interface, implementation) -> list[str]:
    """
    What in C{implementation} (an instance, or a class when the interface has no
    attributes set by the constructor) differs from C{interface}, one line each:
    a missing attribute or method, or a method whose parameters differ.
    """
    problems = []
    for name, description in sorted(interface.namesAndDescriptions(all=True)):
        if not hasattr(implementation, name):
            problems.append(f"{name}: missing")
        elif isinstance(description, Method):
            wanted = interfaceSignature(description)
            got = implementationSignature(implementation, name)
            if _shape(got) != _shape(wanted):
                problems.append(f"{name}{got} differs from {interface.__name__}.{name}{wanted}")
    return problems


class ImplementationTests(TestCase):
    """Every implementation has every interface method with the interface's parameters."""

    def assertMatches(self, interface, implementation) -> None:
        if not isinstance(implementation, type):
            verifyObject(interface, implementation)
        self.assertTrue(interface.implementedBy(
            implementation if isinstance(implementation, type) else type(implementation)))
        self.assertEqual(mismatches(interface, implementation), [])

    def test_clientRegistry(self):
        self.assertMatches(IClientRegistry, ClientRegistry(Clock()))

    def test_memoryStore(self):
        self.assertMatches(IJournalStore, MemoryStore(Clock()))

    def test_sqliteStore(self):
        self.assertMatches(IJournalStore, SQLiteStore(Clock(), self.mktemp()))

    def test_postgresqlStore(self):
        """Built only, never opened: no server is needed."""
        self.assertMatches(IJournalStore, PostgreSQLStore(Clock(), "postgresql:///none"))

    def test_observers(self):
        for observer in [JournalLines, Subscription]:
            with self.subTest(observer=observer.__name__):
                self.assertMatches(IEventObserver, observer)


class CheckerTests(TestCase):
    """L{mismatches} reports what C{verifyObject} lets through."""

    def test_swappedParameters(self):
        """The drift this test was written for: C{truncated} where C{received} is."""
        class Swapped(ClientRegistry):
            def log(self, record, time, messages, truncated=False, received=None,
                    fields=None):
                pass

        registry = Swapped(Clock())
        verifyObject(IClientRegistry, registry)
        [problem] = [p for p in mismatches(IClientRegistry, registry) if p.startswith("log(")]
        self.assertTrue(problem.startswith("log(record, time, messages, truncated=False"),
                        problem)

    def test_otherDefault(self):
        class Paged(MemoryStore):
            def read(self, start, limit=100):
                pass

        self.assertEqual([p.split("(")[0] for p in mismatches(IJournalStore, Paged(Clock()))],
                         ["read"])

    def test_keywordOnly(self):
        """A parameter that callers cannot pass by position differs in kind."""
        class KeywordOnly:
            def logged(self, name, time, messages, *, truncated, fields=None):
                pass

            def event(self, kind, name, time, fields):
                pass

        self.assertEqual([p.split("(")[0] for p in mismatches(IEventObserver, KeywordOnly)],
                         ["logged"])

    def test_missingAttribute(self):
        store = MemoryStore(Clock())
        del store.journalId
        self.assertEqual(mismatches(IJournalStore, store), ["journalId: missing"])

    def test_missingMethod(self):
        class Deaf:
            def event(self, kind, name, time, fields):
                pass

        self.assertEqual(mismatches(IEventObserver, Deaf), ["logged: missing"])
