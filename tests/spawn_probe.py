"""A target for spawned test processes that imports nothing heavy (a spawned child imports its target's module)."""

import os


def report_env(name: str, queue) -> None:
    queue.put(os.environ.get(name))
