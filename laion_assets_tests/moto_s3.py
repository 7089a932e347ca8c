"""A real S3 API on 127.0.0.1 for tests: moto's server, reached by s3fs and boto3 through the environment alone."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from s3fs import S3FileSystem


@contextmanager
def moto_s3(bucket: str, scratch: Path) -> Iterator[Any]:
    """Serve S3 on 127.0.0.1 with ``bucket`` created, the ``AWS_*`` variables pointing at it; yield a boto3 client.

    The endpoint is given as ``AWS_ENDPOINT_URL`` (botocore >= 1.31, which s3fs's aiobotocore uses), the
    credentials as dummy ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, exactly as a pod gets them; the machine's
    own ``~/.aws`` config and profile are hidden. ``scratch`` is a folder for the empty config files.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    none = scratch / "no-aws-config"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        env.setenv("AWS_CONFIG_FILE", str(none))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(none))
        S3FileSystem.clear_instance_cache()  # an s3fs made earlier took its endpoint from an older environment
        try:
            client = boto3.client("s3")
            client.create_bucket(Bucket=bucket)
            yield client
        finally:
            S3FileSystem.clear_instance_cache()
            server.stop()
