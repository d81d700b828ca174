"""Start a local mosquitto for `bench sync` and the sync tests (tests/mosquitto.py).

A free 127.0.0.1 port, a generated config, and stop/start again on the same port,
which is how the tests make a broker outage. Not used by the daemon itself.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BrokerTls:
    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True


class Mosquitto:
    """One broker process. `start()`, `stop()` (a hard outage), `start()` again: same port."""

    def __init__(self, directory: Path, *, port: int | None = None, tls: BrokerTls | None = None,
                 passwords: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        self.passwords = passwords
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "mosquitto.log"

    def _config(self) -> Path:
        # Persistence, so that a restart (after a clean stop) keeps the backend's session
        # and the messages queued for it, as a production broker would.
        lines = [f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {self.directory}/",
                 "max_inflight_messages 0", "max_queued_messages 1000000",
                 "log_type error", "log_type warning", f"log_dest file {self.log_path}",
                 # Started as root, mosquitto would switch to the `mosquitto` user and
                 # could not read this (private) folder; stay whoever we are.
                 f"user {pwd.getpwuid(os.getuid()).pw_name}"]
        if self.passwords is None:
            lines.append("allow_anonymous true")
        else:
            pw = self.directory / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.passwords.items()))
            pw.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True,
                           capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca_file}", f"certfile {self.tls.cert_file}",
                      f"keyfile {self.tls.key_file}",
                      f"require_certificate {'true' if self.tls.require_certificate else 'false'}"]
        conf = self.directory / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            raise RuntimeError("mosquitto is already running")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self._config())],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited: {log}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, *, hard: bool = False) -> None:
        """Stop the broker: SIGTERM (it saves its persistence file), or SIGKILL when `hard`.

        Either way clients lose the link without a clean goodbye: an outage.
        """
        if self.process is None:
            return
        if hard:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
