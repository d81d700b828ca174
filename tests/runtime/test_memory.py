"""The daemon's heap gives big blocks back: scrypt's 16 MiB, on executor threads, must not
stay resident (gateway.runtime.memory)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A password check's scrypt on each of three threads, as the HTTP API checks them; the
# process's resident memory growth after, in MiB.
CHECKS = """
import hashlib, re, sys, threading
from gateway.runtime.memory import return_big_blocks

def rss() -> int:
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024

if sys.argv[1] == "fixed":
    assert return_big_blocks()
before = rss()
for _ in range(3):
    thread = threading.Thread(target=lambda: hashlib.scrypt(
        b"secret", salt=bytes(16), n=16384, r=8, p=1, maxmem=64 << 20, dklen=32))
    thread.start()
    thread.join()
print(rss() - before)
"""


def growth(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHECKS, mode], capture_output=True, text=True,
                          timeout=60, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, /proc")
def test_scrypt_checks_on_threads_leave_nothing_resident() -> None:
    unfixed = growth("glibc's own")
    if unfixed < 16:
        pytest.skip(f"this C library kept {unfixed} MiB without the fix: nothing to show")
    assert growth("fixed") < 8
