"""``S3Archive``: the WAL archive in an S3 bucket (AWS or an S3-compatible server).

boto3 (the AWS SDK: request signing, the credential chain, retries) on worker threads: one
client per archive, made on first use (boto3 clients are thread-safe; making one is not
cheap, so not per call). Credentials and region come from boto3's usual chain: the
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` and ``AWS_PROFILE`` environment variables, shared config files,
instance roles. ``endpoint`` points it at an S3-compatible server (SeaweedFS, MinIO, …),
which then gets path-style addressing. The module rules A1-A4 of ``_archive.py`` hold:
each object is sent with ``x-amz-checksum-sha256`` (the server refuses a body that does not
match) and its size and SHA-256 as metadata, read back by ``put`` and checked by ``get``.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import Any, Final, final

import trio

from ..core import ArchiveCorrupted, ArchiveError, ArchiveObjectMissing
from ._archive import ArchiveObject, _check_put, check_key, verify_object

__all__ = ["S3Archive"]

_META_SHA: Final = "sha256"
_META_SIZE: Final = "size"
_AUTH_CODES: Final = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
    "ExpiredToken", "403", "401",
})
_MISSING_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})


@final
class S3Archive:
    """An ``Archive`` under ``s3://bucket/prefix`` (see the module docstring)."""

    def __init__(self, bucket: str, prefix: str, *, url: str, endpoint: str | None = None,
                 connect_timeout: float = 10.0, read_timeout: float = 30.0) -> None:
        self._bucket = bucket
        self._prefix = prefix + "/" if prefix else ""
        if self._prefix:
            check_key(prefix)
        self._url = url
        self._endpoint = endpoint
        self._timeouts = (connect_timeout, read_timeout)
        self._client_lock = threading.Lock()
        self._s3: Any = None
        self._bucket_seen = False  # set once HEAD bucket succeeded (see _put)

    @property
    def url(self) -> str:
        return self._url

    def _client(self) -> Any:
        with self._client_lock:
            if self._s3 is None:
                import boto3  # heavy: only nodes with an S3 archive pay for it
                from botocore.config import Config

                config = Config(
                    connect_timeout=self._timeouts[0],
                    read_timeout=self._timeouts[1],
                    retries={"max_attempts": 3, "mode": "standard"},
                    s3={"addressing_style": "path" if self._endpoint else "auto"},
                )
                session = boto3.session.Session()
                self._s3 = session.client(
                    "s3", endpoint_url=self._endpoint, config=config,
                    region_name=session.region_name or "us-east-1",
                )
            return self._s3

    def _error(self, what: str, exc: Exception) -> ArchiveError:
        """Rule A4: a typed error naming the archive and what to fix."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            ConnectTimeoutError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        where = f"archive {self._url}" + (f" (endpoint {self._endpoint})" if self._endpoint
                                          else "")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return ArchiveError(f"cannot {what} in {where}: no S3 credentials; set "
                                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", kind="auth")
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return ArchiveError(f"cannot {what} in {where}: bucket {self._bucket} does not "
                                    "exist; create it first", kind="no_bucket")
            if code in _AUTH_CODES:
                return ArchiveError(
                    f"cannot {what} in {where}: access denied ({code}); check "
                    f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and that bucket {self._bucket} "
                    "exists and allows them", kind="auth")
            if code in _MISSING_CODES:
                return ArchiveObjectMissing(f"no object for {what} in {where}")
            kind = "server" if isinstance(status, int) and status >= 500 else "error"
            return ArchiveError(f"cannot {what} in {where}: {code or status}: "
                                f"{error.get('Message', exc)}", kind=kind)
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
            return ArchiveError(f"cannot {what} in {where}: the server did not answer in time "
                                f"({exc}); a slow or overloaded archive", kind="timeout")
        if isinstance(exc, ConnectionError | HTTPClientError):
            return ArchiveError(f"cannot {what} in {where}: the server does not answer ({exc}); "
                                "check --archive-endpoint and the network", kind="unreachable")
        return ArchiveError(f"cannot {what} in {where}: {exc}")

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self._bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(what, exc) from exc

    def _head(self, key: str) -> ArchiveObject | None:
        s3 = self._client()
        try:
            reply = self._call(f"look up {key}", s3.head_object, Key=self._prefix + check_key(key))
        except ArchiveObjectMissing:
            return None
        meta = reply.get("Metadata", {})
        sha, size = meta.get(_META_SHA), reply.get("ContentLength")
        if not isinstance(sha, str) or not isinstance(size, int):
            raise ArchiveCorrupted(f"archive object {self._url}/{key} has no checksum metadata")
        return ArchiveObject(key, size, sha)

    def _put(self, key: str, data: bytes) -> ArchiveObject:
        s3 = self._client()
        if not self._bucket_seen:
            # Some S3-compatible servers create a missing bucket on the first PUT (SeaweedFS
            # for an admin identity): a mistyped bucket name must fail, not silently start
            # a new archive that restore_command never looks at.
            self._check()
            self._bucket_seen = True
        digest = hashlib.sha256(data)
        expected = ArchiveObject(key, len(data), digest.hexdigest())
        self._call(
            f"store {key}", s3.put_object, Key=self._prefix + check_key(key), Body=data,
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
            Metadata={_META_SHA: expected.sha256, _META_SIZE: str(len(data))},
        )
        return _check_put(f"{self._url}/{key}", expected, self._head(key))

    def _get(self, key: str) -> bytes:
        s3 = self._client()
        try:
            reply = self._call(f"read {key}", s3.get_object, Key=self._prefix + check_key(key))
        except ArchiveObjectMissing:
            raise ArchiveObjectMissing(f"no object {key} in archive {self._url}") from None
        try:
            data: bytes = reply["Body"].read()
        except Exception as exc:
            raise self._error(f"read {key}", exc) from exc
        sha = reply.get("Metadata", {}).get(_META_SHA)
        size = reply.get("Metadata", {}).get(_META_SIZE)
        if not isinstance(sha, str) or not isinstance(size, str) or not size.isdigit():
            raise ArchiveCorrupted(f"archive object {self._url}/{key} has no checksum metadata")
        return verify_object(f"{self._url}/{key}", data, int(size), sha)

    def _list(self, prefix: str) -> list[str]:
        s3 = self._client()
        keys: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            reply = self._call(f"list {prefix}", s3.list_objects_v2,
                               Prefix=self._prefix + prefix, **extra)
            keys += [o["Key"][len(self._prefix):] for o in reply.get("Contents", [])]
            token = reply.get("NextContinuationToken")
            if not reply.get("IsTruncated") or not token:
                return sorted(keys)

    def _check(self) -> None:
        s3 = self._client()
        try:
            self._call("open the bucket", s3.head_bucket)
        except ArchiveObjectMissing:
            raise ArchiveError(f"bucket {self._bucket} of archive {self._url} does not exist: "
                               "create it first", kind="no_bucket") from None

    async def put(self, key: str, data: bytes) -> ArchiveObject:
        return await trio.to_thread.run_sync(self._put, key, data)

    async def get(self, key: str) -> bytes:
        return await trio.to_thread.run_sync(self._get, key)

    async def head(self, key: str) -> ArchiveObject | None:
        return await trio.to_thread.run_sync(self._head, key)

    async def list(self, prefix: str) -> list[str]:
        return await trio.to_thread.run_sync(self._list, prefix)

    async def check(self) -> None:
        await trio.to_thread.run_sync(self._check)

    def __repr__(self) -> str:
        return f"S3Archive({self._url!r}, endpoint={self._endpoint!r})"
