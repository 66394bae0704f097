"""
``logsvc-query``'s command line: options before or after each command's arguments, help
that names the program.
"""

from twisted.python import usage
from twisted.trial.unittest import TestCase

from logsvc.query import Options


class OptionPlacementTests(TestCase):
    def parse(self, *args) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_readLimitBeforeOrAfterFrom(self):
        for args in (["read", "1", "--limit", "5"], ["read", "--limit", "5", "1"],
                     ["read", "1", "-n", "5"], ["read", "-n5", "1"], ["read", "1", "--limit=5"]):
            options = self.parse(*args)
            self.assertEqual((options.subOptions["from"], options.subOptions["limit"]),
                             (1, 5), args)

    def test_jsonAnywhere(self):
        for args in (["--json", "log", "web-1"], ["log", "--json", "web-1"],
                     ["log", "web-1", "--json"], ["log", "web-1", "-j"]):
            options = self.parse(*args)
            self.assertEqual((options["json"], options.subOptions["name"]), (True, "web-1"))

    def test_watchOptionsAfterNothing(self):
        options = self.parse("watch", "--client", "api-*", "--from", "3")
        self.assertEqual((options.subOptions["client"], options.subOptions["from"],
                          options.subOptions["events"]),
                         ("api-*", 3, ["ready", "log", "set", "close", "entry"]))

    def test_connectionOptionsAfterTheCommand(self):
        options = self.parse("clients", "--connect", "9000", "-u", "alice")
        self.assertEqual((options["connect"], options["user"]),
                         ("tcp:127.0.0.1:9000", "alice"))
        options = self.parse("--connect", "9001", "state", "web-1")
        self.assertEqual(options["connect"], "tcp:127.0.0.1:9001")
        self.assertEqual(self.parse("clients")["connect"], "tcp:127.0.0.1:8787")

    def test_doubleDashEndsOptions(self):
        self.assertEqual(self.parse("log", "--", "--json").subOptions["name"], "--json")

    def test_stillChecked(self):
        for args in (["read", "1", "--limit", "0"], ["read", "1", "2"], ["read"],
                     ["read", "1", "--nope"], ["log", "a", "--limit", "3"]):
            self.assertRaises(usage.UsageError, self.parse, *args)

    def test_usageLinesNameTheProgram(self):
        self.assertTrue(str(Options()).startswith("Usage: logsvc-query [options] clients |"))
        for command, synopsis in [("read", "read [options] FROM"),
                                  ("log", "log [options] NAME"),
                                  ("state", "state [options] NAME"),
                                  ("clients", "clients [options]"),
                                  ("watch", "watch [options]"),
                                  ("append", "append [options] JSON")]:
            options = Options()
            options.subCommand = command
            sub = dict((c, cls) for c, _, cls, _ in Options.subCommands)[command]()
            sub.parent = options
            self.assertEqual(sub.getSynopsis(), f"Usage: logsvc-query [options] {synopsis}")

    def test_helpTextsEndOnce(self):
        for _, _, cls, _ in Options.subCommands:
            text = cls().getUsage()
            self.assertNotIn("..", text)
            self.assertNotIn("Twisted version", text)
