"""A process's own memory, read from Linux's /proc — for the memory budget's measurements and the
data-parallel ranks' reports. Lean on purpose (the standard library only): a rank imports it."""

from __future__ import annotations

import re
from pathlib import Path


def private_bytes(pid: int | str = "self") -> int:
    """What process ``pid`` holds that no other process shares (``Private_Clean + Private_Dirty``
    of its smaps): for a fork, what it copied or allocated. 0 once gone, or off Linux."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return sum(int(m) * 1024 for m in re.findall(r"^Private_(?:Clean|Dirty):\s+(\d+) kB", text, re.M))


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (``/proc/<pid>/task/*/children``)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found
