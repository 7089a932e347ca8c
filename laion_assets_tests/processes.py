"""Process groups the tests start (servers, daemons): wait for all their processes to be gone, else kill them."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def wait_for_group(process: subprocess.Popen, timeout: float = 60) -> bool:
    """Wait for the whole process group to be gone; True if it was within ``timeout``, else it is killed."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            process.poll()  # reap the leader: a zombie still counts as a member of its group
            os.killpg(process.pid, 0)  # raises once no process of the group is left
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        process.wait(timeout=30)
        return True
    process.wait(timeout=30)
    return False


def terminate_group(process: subprocess.Popen, timeout: float = 10) -> bool:
    """SIGTERM a process group we started, then :func:`wait_for_group` (SIGKILL what is left after ``timeout``)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return wait_for_group(process, timeout)
