"""What the randomized, seeded interleaving tests (tests/test_*_chaos.py) share: a
scenario keeps a log of its steps, and a broken invariant fails the test with the seed
and that log, so the failure can be replayed."""

import traceback

import pytest


class SeededScenario:
    """Subclasses set `self.seed`, `self.log` (a list of lines), `self.rng` (seeded) and
    `self.stats` (a Counter)."""

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

    def run_steps(self, actions: dict[str, int], check) -> None:
        """30–80 of the named methods drawn by weight (counted in `self.stats`), each
        followed by `check()`; an unexpected exception fails with the seed and the steps."""
        names, weights = zip(*actions.items(), strict=True)
        for _ in range(self.rng.randint(30, 80)):
            action = self.rng.choices(names, weights)[0]
            self.stats[action] += 1
            try:
                getattr(self, action)()
                check()
            except Exception as exc:  # noqa: BLE001 - pytest.fail is no Exception: it passes
                self.note(f"{action} raised {exc!r}")
                # Where it was raised (the log is all a failure shows: pytrace=False).
                self.note(traceback.format_exc(limit=-8).rstrip())
                self.fail(f"{action}: {exc!r}")
