"""S3 locations, through boto3: ``s3://bucket/key`` for a file, ``s3://bucket/prefix/`` for a
folder.

boto3 finds credentials, the region and the endpoint the usual way (environment variables such
as ``AWS_ENDPOINT_URL_S3``, the shared config files, instance roles). Downloads and uploads are
multipart transfers from and to local files, so memory does not grow with the object, and an
uploaded object appears only when its upload completes.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from gateway.errors import SourceError
from gateway.pipelines.locations import TEMPORARY_MARK, InputFile, Location


class S3Location(Location):
    def __init__(self, bucket: str, key: str) -> None:
        self.bucket = bucket
        self.key = key
        self.url = f"s3://{bucket}/{key}"
        self._client: Any = None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise SourceError(f"{url} names no bucket; write s3://bucket/key")
        return cls(bucket, key)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("s3")
        return self._client

    def is_folder(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def list_files(self) -> list[InputFile]:
        if not self.is_folder():
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.key)
            except (ClientError, BotoCoreError) as exc:
                raise SourceError(f"cannot read input {self.url}: {exc}") from exc
            return [InputFile(self.url, PurePosixPath(self.key).name)]

        files: list[InputFile] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key
            )
            for page in pages:
                for entry in page.get("Contents", []):
                    key = entry["Key"]
                    name = key[len(self.key) :]
                    if name and not key.endswith("/") and TEMPORARY_MARK not in name:
                        files.append(InputFile(f"s3://{self.bucket}/{key}", name))
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"cannot list {self.url}: {exc}") from exc
        return sorted(files, key=lambda file: file.relative_name)

    def child(self, relative_name: str) -> Location:
        prefix = self.key if self.key.endswith("/") or not self.key else self.key + "/"
        return S3Location(self.bucket, prefix + relative_name)

    def download(self, target: Path) -> None:
        try:
            self.client.download_file(self.bucket, self.key, str(target))
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"cannot read input {self.url}: {exc}") from exc

    def upload(self, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self.key)
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"cannot write output {self.url}: {exc}") from exc

    def size(self) -> int | None:
        try:
            reply = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except (ClientError, BotoCoreError):
            return None
        return int(reply["ContentLength"])
