"""README.rst's options table names every option of ``twistd logatron`` with its default."""

import re
from pathlib import Path

from twisted.trial.unittest import TestCase

from logsvc.tap import Options

README = Path(__file__).resolve().parent.parent / "README.rst"


def optionsTable() -> dict:
    """The README's options table: each option named in its first column, to its default."""
    table = README.read_text().split("\nOptions\n-------\n", 1)[1].split("\n\n\n", 1)[0]
    rows = {}
    for row in re.split(r"\n   \* - ", table)[2:]:
        names, default = row.split("\n     - ")[:2]
        for name in re.findall(r"``--([a-z-]+)``", names):
            rows[name] = " ".join(default.split())
    return rows


class OptionsTableTests(TestCase):
    def test_everyOptionWithItsDefault(self):
        options = Options()
        expected = {name: f"``{default}``" for name, _, default, *_ in options.optParameters
                    if default is not None}
        expected.update({name: "none" for name, _, default, *_ in options.optParameters
                         if default is None})
        expected.update({name: "on" for name in ("journal-lines", "no-journal-lines")})
        expected["auth"] = "none"
        table = optionsTable()
        self.assertEqual(set(table), set(expected))
        self.assertEqual({name: table[name].split(" (")[0] for name in table}, expected)
