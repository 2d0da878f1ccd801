"""What the randomized, seeded interleaving tests (tests/test_*_chaos.py) share: a
scenario keeps a log of its steps, and a broken invariant fails the test with the seed
and that log, so the failure can be replayed."""

import pytest


class SeededScenario:
    """Subclasses set `self.seed` and `self.log` (a list of lines)."""

    seed: int
    log: list[str]

    def note(self, line: str) -> None:
        self.log.append(line)

    def fail(self, message: str):
        pytest.fail(
            f"seed {self.seed}: {message}\n--- steps ---\n" + "\n".join(self.log), pytrace=False
        )

    def expect(self, condition, message: str) -> None:
        if not condition:
            self.fail(message)
