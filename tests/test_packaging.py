"""setup.cfg installs every package of logsvc: an editable install would hide one left out."""

import configparser
from pathlib import Path

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent


class PackagesTests(TestCase):
    def test_everyPackageIsInstalled(self):
        config = configparser.ConfigParser()
        config.read(ROOT / "setup.cfg")
        listed = set(config["options"]["packages"].split())
        found = {".".join(init.parent.relative_to(ROOT).parts)
                 for init in (ROOT / "logsvc").rglob("__init__.py")}
        self.assertEqual(found - listed, set())
        self.assertIn("twisted.plugins", listed)
