"""The service as twistd builds it, for in-process tests."""

import sys

from twisted.trial.unittest import SynchronousTestCase

from logsvc.service import LogService
from logsvc.tap import Options, makeService


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
