"""A throwaway Postfix instance on loopback for ``make bench``: STARTTLS required, everything discarded.

::

    with postfix_server(workdir) as server:           # or: server = ensure_postfix(workdir) ... server.stop()
        with SmtpTransport(server.host, server.port, server.cert_pem, server_hostname="localhost") as smtp:
            smtp.send(raw, sender, recipient)
        assert server.wait_drained(expected_delivered=sent)

Postfix is installed from Debian packages when ``/usr/sbin/postfix`` is missing (preseeded "No
configuration", so nothing prompts and no system instance is configured or started).

The instance is a separate one: its ``main.cf`` and ``master.cf`` are written to ``workdir/postfix``
and passed with ``postfix -c``; nothing under ``/etc/postfix`` is read or changed, and a system
Postfix on port 25, if any, is left alone. The queue and data directories are on tmpfs
(``/dev/shm/carecast-postfix-<port>-*``), so queue files never reach a disk; they are deleted on stop.

Only 127.0.0.0/8 may send, STARTTLS (TLS 1.2+) is required before MAIL, and every recipient, whatever
its domain, goes to the ``discard`` transport, which reports success without delivering. There are no
DNS lookups, address mappings, header/body checks, milters or MIME input processing, no rate or
connection-count limits, and the daemons are not recycled every 100 uses, so Postfix spends its CPU
on SMTP, TLS and its queue only. That is still about 1.2-1.6 ms of CPU per ~4 KB message on the
2-core bench machine, spread over smtpd, cleanup, qmgr, trivial-rewrite, discard, postlogd and master.

Logging: Postfix logs every recipient address (``to=<...>``) and has no switch to turn that off. Here
it never reaches syslog or a file: ``maillog_file = /dev/stdout`` makes ``postlogd`` write to the
master's stdout (``postfix start-fg``), which is a pipe read by this process (or ``/dev/null`` with
``count_deliveries=False``). The lines are scanned in memory for ``status=sent (`` (one per recipient
the discard agent accepted) and dropped. That count, ``server.delivered()``, is Postfix's own
confirmation that messages went all the way through its queue, independent of the client's 250 replies;
``server.wait_drained()`` waits for the queue to empty and, if asked, for the count to reach a number.
The master's stderr (start-up diagnostics from ``postfix-script``, no addresses) goes to
``workdir/postfix/start.log``.

``server.cpu_seconds()`` / ``cpu_seconds_by_daemon()`` give the CPU time of the master and all its
daemons (live ones from ``/proc``, exited ones through the master's ``cutime``/``cstime``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from carecast.mail.certificates import ensure_sink_certificate

POSTFIX = Path("/usr/sbin/postfix")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2525
TMPFS = Path("/dev/shm")
_DEBCONF_PRESEED = b"postfix postfix/main_mailer_type select No configuration\n"
_SENT_MARK = b" status=sent ("
_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class PostfixUnavailable(RuntimeError):
    """Postfix could not be installed or started."""


def install_postfix() -> None:
    """``apt-get install postfix`` unless ``/usr/sbin/postfix`` exists."""
    if POSTFIX.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostfixUnavailable("Postfix is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["debconf-set-selections"], input=_DEBCONF_PRESEED, check=True, env=env)
    install = ["apt-get", "install", "-y", "--no-install-recommends", "postfix"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, check=True, stdout=subprocess.DEVNULL)
    if not POSTFIX.exists():
        raise PostfixUnavailable("apt-get install postfix did not provide /usr/sbin/postfix")


def main_cf(host: str, queue_dir: Path, data_dir: Path, cert: Path, key: Path, extra: dict[str, str]) -> str:
    settings: dict[str, object] = {
        "compatibility_level": "3.6",
        "queue_directory": queue_dir,
        "data_directory": data_dir,
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "localhost",
        "mydomain": "localdomain",
        "myorigin": "$myhostname",
        "inet_interfaces": host,
        "inet_protocols": "ipv4",
        # Accept any recipient from loopback and deliver nothing: every address class goes to discard.
        "mynetworks": "127.0.0.0/8",
        "mydestination": "",
        "relay_domains": "",
        "local_recipient_maps": "",
        "smtpd_relay_restrictions": "permit_mynetworks, reject",
        "smtpd_recipient_restrictions": "",
        "smtpd_reject_unlisted_recipient": "no",
        "smtpd_reject_unlisted_sender": "no",
        "default_transport": "discard",
        "relay_transport": "discard",
        "local_transport": "discard",
        "virtual_transport": "discard",
        "notify_classes": "",
        "biff": "no",
        "append_dot_mydomain": "no",
        # No DNS, no reverse lookups, nothing rewritten or inspected on the way in.
        "disable_dns_lookups": "yes",
        "smtp_dns_support_level": "disabled",
        "smtp_host_lookup": "native",
        "smtpd_peername_lookup": "no",
        "receive_override_options": (
            "no_address_mappings, no_header_body_checks, no_milters, no_unknown_recipient_checks"
        ),
        "local_header_rewrite_clients": "",
        "enable_original_recipient": "no",
        "disable_mime_input_processing": "yes",
        # STARTTLS required, TLS 1.2 or newer, with the certificate the client pins. One handshake per
        # (long-lived) connection, so no session cache.
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_chain_files": f"{key}, {cert}",
        "smtpd_tls_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtpd_tls_loglevel": "0",
        "smtpd_tls_session_cache_database": "",
        "smtpd_tls_received_header": "no",
        # Room for many parallel connections, no rate limits, daemons not recycled every 100 uses, and
        # no inflow throttling (the tmpfs queue absorbs bursts).
        "default_process_limit": "200",
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
        "smtpd_client_message_rate_limit": "0",
        "max_use": "1000000",
        "max_idle": "3600",
        "in_flow_delay": "0",
        # Logging through postlogd to the master's stdout (see the module docstring), never syslog.
        "maillog_file": "/dev/stdout",
        **extra,
    }
    return "".join(f"{name} = {value}\n" for name, value in settings.items())


def master_cf(host: str, port: int) -> str:
    """The services this instance uses, none chrooted."""
    return f"""\
# service type  private unpriv  chroot  wakeup  maxproc command
{host}:{port} inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class PostfixServer:
    """A running instance: ``host``, ``port`` and ``cert_pem`` (to pin) for the client."""

    host: str
    port: int
    cert_pem: bytes
    config_dir: Path
    queue_dir: Path
    _tmpfs_root: Path = field(repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _reader: threading.Thread | None = field(default=None, repr=False)
    _sent: int = field(default=0, repr=False)

    def delivered(self) -> int:
        """Recipients the discard agent has accepted so far (stays 0 with ``count_deliveries=False``)."""
        return self._sent

    def queued(self) -> int:
        """Messages still in Postfix's queue."""
        return sum(len(files) for name in _QUEUES for _, _, files in os.walk(self.queue_dir / name))

    def wait_drained(self, expected_delivered: int | None = None, timeout: float = 60.0) -> bool:
        """Wait until the queue is empty and, if given, ``delivered()`` has reached ``expected_delivered``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.queued() == 0 and (expected_delivered is None or self._sent >= expected_delivered):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def master_pid(self) -> int | None:
        return _master_pid(self.queue_dir)

    def cpu_seconds(self) -> float:
        """User+system CPU of the master and every daemon it started, including ones that exited."""
        return sum(self.cpu_seconds_by_daemon().values())

    def cpu_seconds_by_daemon(self) -> dict[str, float]:
        """``cpu_seconds()`` by program (``smtpd``, ``cleanup``, ...); daemons that already exited count
        under ``master`` (their parent's ``cutime``/``cstime``)."""
        master = self.master_pid()
        if master is None:
            return {}
        ticks: dict[str, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(entry.name) == master:
                # utime, stime, cutime, cstime
                ticks["master"] = ticks.get("master", 0) + sum(int(value) for value in fields[11:15])
            elif int(fields[1]) == master:
                ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
        return {name: value / _CLOCK_TICKS for name, value in sorted(ticks.items())}

    def stop(self) -> None:
        """``postfix stop``, wait for the master to exit, delete the tmpfs queue. Safe to call twice."""
        if self._process is not None:
            subprocess.run(
                [str(POSTFIX), "-c", str(self.config_dir), "stop"], capture_output=True, timeout=60, check=False
            )
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        shutil.rmtree(self._tmpfs_root, ignore_errors=True)

    def _count_sent(self, stream: io.BufferedReader) -> None:
        # Log lines carry addresses: they are scanned here and dropped, never kept or written out.
        tail = b""
        while chunk := stream.read1(1 << 16):
            chunk = tail + chunk
            cut = chunk.rfind(b"\n") + 1
            self._sent += chunk.count(_SENT_MARK, 0, cut)
            tail = chunk[cut:]
        stream.close()


def ensure_postfix(
    workdir: Path,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    count_deliveries: bool = True,
    settings: dict[str, str] | None = None,
) -> PostfixServer:
    """Install Postfix if needed, write a private instance under ``workdir/postfix`` and start it.

    ``settings`` adds or overrides ``main.cf`` parameters. An instance this module started earlier on
    the same port and never stopped (its process killed) is stopped first.
    """
    install_postfix()
    _stop_stale_instances(port)
    if not _port_free(host, port):
        raise PostfixUnavailable(f"{host}:{port} is already in use")
    config_dir = (workdir / "postfix").resolve()
    if any(character.isspace() or character == "," for character in str(config_dir)):
        raise PostfixUnavailable(f"Postfix cannot use a configuration path with spaces or commas: {config_dir}")
    config_dir.mkdir(parents=True, exist_ok=True)
    cert, key = ensure_sink_certificate(config_dir / "tls")
    tmpfs_root = Path(tempfile.mkdtemp(prefix=f"carecast-postfix-{port}-", dir=TMPFS))
    tmpfs_root.chmod(0o755)
    queue_dir, data_dir = tmpfs_root / "queue", tmpfs_root / "data"
    queue_dir.mkdir(mode=0o755)  # postfix-script creates its subdirectories with Postfix's owners
    (config_dir / "main.cf").write_text(main_cf(host, queue_dir, data_dir, cert, key, settings or {}))
    (config_dir / "master.cf").write_text(master_cf(host, port))
    server = PostfixServer(host, port, cert.read_bytes(), config_dir, queue_dir, tmpfs_root)
    start_log = config_dir / "start.log"
    try:
        with open(start_log, "wb") as stderr:
            server._process = subprocess.Popen(
                [str(POSTFIX), "-c", str(config_dir), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if count_deliveries else subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        if server._process.stdout is not None:
            server._reader = threading.Thread(target=server._count_sent, args=(server._process.stdout,), daemon=True)
            server._reader.start()
        _wait_listening(server, start_log)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def postfix_server(
    workdir: Path,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    count_deliveries: bool = True,
    settings: dict[str, str] | None = None,
) -> Iterator[PostfixServer]:
    server = ensure_postfix(workdir, port, host, count_deliveries, settings)
    try:
        yield server
    finally:
        server.stop()


def _master_pid(queue_dir: Path) -> int | None:
    try:
        return int((queue_dir / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop_stale_instances(port: int) -> None:
    """Stop masters left running by an earlier, killed bench on this port (their queues are ours too)."""
    for root in TMPFS.glob(f"carecast-postfix-{port}-*"):
        pid = _master_pid(root / "queue")
        if pid is not None:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "master":
                    os.kill(pid, signal.SIGTERM)
                    deadline = time.monotonic() + 10
                    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                        time.sleep(0.1)
            except (OSError, ProcessLookupError):
                pass
        shutil.rmtree(root, ignore_errors=True)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _wait_listening(server: PostfixServer, start_log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    assert server._process is not None
    while time.monotonic() < deadline:
        if server._process.poll() is not None:
            detail = start_log.read_text(errors="replace")[-2000:]
            raise PostfixUnavailable(f"postfix start-fg exited with status {server._process.returncode}: {detail}")
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as connection:
                if connection.recv(3) == b"220":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise PostfixUnavailable(f"Postfix did not answer on {server.host}:{server.port} within {timeout:.0f} s")
