"""The service as twistd builds it, for in-process tests."""

import sys

from twisted.trial.unittest import SynchronousTestCase

from logsvc.metrics import ServiceMetrics
from logsvc.service import LogService
from logsvc.tap import Options, makeService
from logsvc.web import rootResource


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def buildService(testCase: SynchronousTestCase, *args: str, reactor=None) -> LogService:
    """
    C{makeService} for C{twistd logatron ARGS}.  It sets the interpreter's thread switch
    interval, a process-wide setting, which is put back when C{testCase} ends.
    """
    testCase.addCleanup(sys.setswitchinterval, sys.getswitchinterval())
    return makeService(parse(*args), reactor=reactor)


def serviceMetrics(service: LogService, journal=None) -> ServiceMetrics:
    """The metrics tap builds, over a service built by hand (and its journal factory)."""
    return ServiceMetrics(service.registry, service.store, service.startTime,
                          service.listenerStates, service.syslog,
                          () if journal is None else journal.readers)


def webRoot(service: LogService, journal=None):
    """The resource tree tap builds, over a service built by hand."""
    return rootResource(service, serviceMetrics(service, journal))
