"""Two requests at the same moment, in threads: the first stops after its writes (its
locks held, not committed) while the second starts; the first commits once the second
has had a second to go ahead or to wait for those locks."""

import threading
from collections.abc import Callable


def second_meets_first_uncommitted(
    app, first: Callable[[Callable[[], None]], None], second: Callable[[], None]
) -> list[Exception]:
    """Run `first(hold)` and `second()`, each in an app context of its own thread.
    `first` calls `hold()` after its writes and before its commit. The exceptions the
    two raised, the first's first."""
    holds, may_commit = threading.Event(), threading.Event()
    raised: list[Exception] = []

    def hold() -> None:
        holds.set()
        may_commit.wait(10)

    def run(step, *args) -> None:
        try:
            with app.app_context():
                step(*args)
        except Exception as exc:  # noqa: BLE001 - returned to the test
            raised.append(exc)
        finally:
            holds.set()

    one = threading.Thread(target=run, args=(first, hold))
    two = threading.Thread(target=run, args=(second,))
    one.start()
    holds.wait(10)
    two.start()
    two.join(1)  # meanwhile it went ahead, or waits for the first's locks
    may_commit.set()
    one.join(10)
    two.join(10)
    return raised
