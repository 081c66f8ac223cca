"""A real S3-compatible server on loopback for the tests: moto's standalone server in a subprocess.

``S3Server.start()`` launches ``moto_server`` on a free port, creates an IAM user with an access key
and a bucket, then switches moto's authentication on, so a wrong key is refused like on real S3.
Every request the server answers is read back from its access log (``requests()``), so a test can
assert which objects were read. ``s3_env`` points the standard AWS_* variables at it for one test.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.ports import free_port

BUCKET = "fashionrec-test"
REGION = "us-east-1"
# werkzeug's access log line: 127.0.0.1 - - [date] "GET /bucket/key?query HTTP/1.1" 200 -
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours error and partial-content lines


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # URL path without the query, e.g. /bucket/prefix/file.parquet
    query: str
    status: int


class S3Server:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "moto_server.log"
        self.access_key = self.secret_key = ""
        self._process: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self, timeout_s: float = 30.0) -> "S3Server":
        moto_server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        # Scrub AWS_* so the server's own boto setup is not steered by the caller's account.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(self.log_path, "wb") as log:  # the child keeps its own handle
            self._process = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(self.port)],
                                             stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2).read()
                break
            except OSError:
                if self._process.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start: {self.log_path.read_text()[-2000:]}")
                time.sleep(0.2)
        try:
            self._provision()
        except BaseException:
            self.stop()  # never leave an orphaned server behind
            raise
        return self

    def _provision(self) -> None:
        """An IAM user allowed to use S3 and the test bucket, created before authentication is on."""
        import boto3

        session = boto3.session.Session(aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                                         region_name=REGION)
        iam = session.client("iam", endpoint_url=self.endpoint)
        iam.create_user(UserName="fashionrec")
        iam.put_user_policy(UserName="fashionrec", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="fashionrec")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        session.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=BUCKET)
        # From here on every request must be signed with a known key (0 more unauthenticated actions).
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"}), timeout=5).read()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": REGION}

    def mark(self) -> None:
        """Forget the requests logged so far: ``requests()`` reports only the ones after this call."""
        self._log_offset = self.log_path.stat().st_size

    def requests(self, settle_s: float = 0.2) -> list[Request]:
        time.sleep(settle_s)  # the server logs a request just after answering it
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            text = _ANSI.sub("", log.read().decode(errors="replace"))
        out = []
        for match in _LOG_LINE.finditer(text):
            path, _, query = match["target"].partition("?")
            if not path.startswith("/moto-api"):
                out.append(Request(match["method"], urllib.request.unquote(path), query, int(match["status"])))
        return out

    def object_gets(self, prefix: str) -> list[Request]:
        """GETs of objects under ``/<bucket>/<prefix>`` (listings are GETs of the bucket itself)."""
        return [r for r in self.requests() if r.method == "GET" and r.path.startswith(f"/{BUCKET}/{prefix}")
                and "list-type" not in r.query]


@pytest.fixture(scope="session")
def s3_server():
    workdir = Path(tempfile.mkdtemp(prefix="fashionrec-moto-"))
    server = S3Server(workdir).start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The standard AWS_* variables aimed at the test server (only for this test)."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    s3_server.mark()
    return s3_server
