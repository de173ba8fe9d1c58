"""The api's own tests (`--tests full` runs them in the release, with its environment)."""

import unittest

from main import hello


class HelloTest(unittest.TestCase):
    def test_hello_says_world(self) -> None:
        self.assertEqual(hello()["hello"], "world")
