"""Loopback stand-ins for remote storage: moto's S3 server and an asyncssh SFTP server.

Both listen on 127.0.0.1 on a free port and live only as long as their fixture.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import asyncssh

from tests.redis_server import _free_port

HOST = "127.0.0.1"
# DEBUG logs of these libraries repeat request bodies, which in tests are test files with
# values that the suite's log leak check looks for.
QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "werkzeug", "asyncssh")


class SftpServer:
    """An SFTP server rooted at ``root`` that accepts one client key, in a thread of its own."""

    def __init__(self, root: Path, keys: Path) -> None:
        self.root = root
        self.port = _free_port()
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_file = keys / "client_key"
        client_key.write_private_key(str(self.client_key_file))
        self.known_hosts_file = keys / "known_hosts"
        self.known_hosts_file.write_bytes(
            f"[{HOST}]:{self.port} ".encode() + host_key.export_public_key("openssh")
        )
        self._host_key = host_key
        self._authorized = asyncssh.import_authorized_keys(
            client_key.export_public_key("openssh").decode()
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._acceptor: asyncssh.SSHAcceptor | None = None

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self._acceptor = future.result(timeout=10)

    async def _listen(self) -> asyncssh.SSHAcceptor:
        root = str(self.root).encode()

        def sftp_factory(channel: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
            return asyncssh.SFTPServer(channel, chroot=root)

        return await asyncssh.listen(
            HOST,
            self.port,
            server_host_keys=[self._host_key],
            authorized_client_keys=self._authorized,
            sftp_factory=sftp_factory,
            allow_scp=False,
        )

    def stop(self) -> None:
        if self._acceptor is not None:
            acceptor = self._acceptor

            async def close() -> None:
                acceptor.close()
                await acceptor.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
