"""The artifact store (`components/common/storage/`) on a local folder and on a real S3 server.

The S3 tests run against SeaweedFS's S3 gateway started on loopback (`s3_server.py`). Each test
gets its own key prefix in the shared bucket.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from s3_server import S3Server, SlowProxy, free_ports, s3_server_fixture  # noqa: F401 - the s3_server fixture

from codedpo.components.common.storage import (
    TEMP_PREFIX,
    LocalStore,
    S3Settings,
    S3Store,
    StorageAuthError,
    StorageBucketMissingError,
    StorageConfigError,
    StorageConnectionError,
    StorageIntegrityError,
    StorageObjectMissingError,
    Store,
    open_store,
    run_prefix,
)

MiB = 2**20


@pytest.fixture
def s3_store(s3_server: S3Server) -> S3Store:
    store = open_store(f"s3://{s3_server.bucket}/t-{uuid.uuid4().hex[:8]}", settings=s3_server.settings())
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return open_store(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def raw_objects(server: S3Server, store: S3Store) -> list[str]:
    """Every object name under the store's prefix, temporaries included, straight from the server."""
    client = server.raw_client()
    return sorted(o.object_name for o in client.list_objects(server.bucket, prefix=store.prefix + "/", recursive=True))


# --- round trips -------------------------------------------------------------------------------


def test_bytes_round_trip_list_exists_delete(store: Store) -> None:
    store.put_bytes("a.txt", b"alpha")
    store.put_bytes("runs/r1/samples/part.jsonl", b'{"x": 1}\n')
    store.put_bytes("runs/r10/samples/part.jsonl", b"")
    store.put_bytes("a.txt", b"alpha, replaced")

    assert store.get_bytes("a.txt") == b"alpha, replaced"
    assert store.get_bytes("runs/r10/samples/part.jsonl") == b""
    assert store.exists("a.txt") and not store.exists("b.txt")
    assert store.list() == ["a.txt", "runs/r1/samples/part.jsonl", "runs/r10/samples/part.jsonl"]
    assert store.list("runs/r1") == ["runs/r1/samples/part.jsonl"]  # a folder, not a string prefix
    assert store.list("nothing/here") == []

    store.delete("a.txt")
    store.delete("a.txt")  # deleting a missing key is fine
    assert not store.exists("a.txt")
    with pytest.raises(StorageObjectMissingError, match=r"no object at .*a\.txt"):
        store.get_bytes("a.txt")


def test_file_round_trip(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(300_000))
    store.put_file("models/m1/weights.bin", source)
    target = tmp_path / "out" / "nested" / "weights.bin"
    store.get_file("models/m1/weights.bin", target)
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["weights.bin"]  # no temporary left


def test_runs_are_listed_by_id_and_stage(store: Store) -> None:
    for run, stage in [("r1", "samples"), ("r1", "execute"), ("r2", "pairs")]:
        store.put_bytes(f"{run_prefix(run, stage)}/out.jsonl", b"{}\n")
    assert store.list_runs() == ["r1", "r2"]
    assert store.list_stages("r1") == ["execute", "samples"]
    assert store.list_stages("r3") == []


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", ".hidden", f"{TEMP_PREFIX}/x", "a/"])
def test_invalid_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageConfigError, match="invalid key"):
        open_store(tmp_path).put_bytes(key, b"x")


def test_local_uri_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(f"file://{tmp_path}/s").put_bytes("k", b"1")
    assert open_store(tmp_path / "s").get_bytes("k") == b"1"
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_store("s"), LocalStore) and open_store("s").get_bytes("k") == b"1"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".k.codedpo.json", "k"]  # plain file + sidecar
    with pytest.raises(StorageConfigError, match="unsupported scheme"):
        open_store("gs://bucket/x")


# --- S3 specifics --------------------------------------------------------------------------------


def test_multipart_upload_above_part_size(s3_server: S3Server, s3_store: S3Store, tmp_path: Path) -> None:
    data = os.urandom(12 * MiB)  # part size is 5 MiB: 3 parts
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    s3_store.put_file("big-file.bin", source)
    s3_store.put_bytes("big-bytes.bin", data)

    client = s3_server.raw_client()
    for key in ["big-file.bin", "big-bytes.bin"]:
        stat = client.stat_object(s3_server.bucket, f"{s3_store.prefix}/{key}")
        assert stat.etag.endswith("-3"), "a multipart object's ETag ends in -<parts> (kept by the server-side copy)"
        assert stat.size == 12 * MiB
        target = tmp_path / f"out-{key}"
        s3_store.get_file(key, target)
        assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert raw_objects(s3_server, s3_store) == [f"{s3_store.prefix}/big-bytes.bin", f"{s3_store.prefix}/big-file.bin"]


def test_a_reader_never_sees_a_partial_object(s3_server: S3Server, s3_store: S3Store, tmp_path: Path) -> None:
    """A slow writer (through a throttled proxy) uploads 12 MiB; a reader polling the key sees it
    absent, then complete; never anything in between."""
    data = os.urandom(12 * MiB)
    source = tmp_path / "slow.bin"
    source.write_bytes(data)
    proxy = SlowProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), rate_bytes_per_s=16 * MiB)
    try:
        writer_store = open_store(s3_store.uri, settings=s3_server.settings(endpoint=proxy.endpoint))
        writer = threading.Thread(target=writer_store.put_file, args=("slow.bin", source))
        seen: list[str] = []
        writer.start()
        while writer.is_alive() or not seen or seen[-1] != "complete":
            try:
                seen.append("complete" if s3_store.get_bytes("slow.bin") == data else "WRONG")
            except StorageObjectMissingError:
                seen.append("absent")
            if not writer.is_alive() and len(seen) > 1000:
                break
        writer.join()
    finally:
        proxy.close()
    assert proxy.uploaded >= 12 * MiB
    assert set(seen) <= {"absent", "complete"}
    assert seen[0] == "absent" and seen[-1] == "complete"
    assert "absent" not in seen[seen.index("complete") :]


def test_local_overwrite_is_atomic(tmp_path: Path) -> None:
    """Locally, a reader polling a key that a writer keeps replacing sees one whole version or the
    other, and never a false integrity error (sidecar and data are replaced one after the other)."""
    store = open_store(tmp_path)
    versions = [os.urandom(2 * MiB), os.urandom(3 * MiB)]
    store.put_bytes("k", versions[0])
    reading = threading.Event()
    reading.set()
    writes = 0

    def rewrite() -> None:
        nonlocal writes
        while reading.is_set():
            store.put_bytes("k", versions[writes % 2])
            writes += 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(60):
            assert store.get_bytes("k") in versions
    finally:
        reading.clear()
        writer.join()
    assert writes > 1
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


WRITER = textwrap.dedent(
    """
    import sys, time
    from codedpo.components.common import storage
    endpoint, uri, key, path, pause = sys.argv[1:6]
    if pause == "before-publish":
        def stall(*args, **kwargs):
            print("uploaded", flush=True)
            time.sleep(120)
        storage.S3Store._publish = stall
    settings = storage.S3Settings(endpoint=endpoint, access_key=sys.argv[6], secret_key=sys.argv[7],
                                  secure=False, region="us-east-1", part_size_mb=5, retries=0)
    store = storage.open_store(uri, settings=settings)
    print("uploading", flush=True)
    store.put_file(key, path)
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("kill_at", ["mid-upload", "before-publish"])
def test_an_interrupted_upload_leaves_no_object(
    s3_server: S3Server, s3_store: S3Store, tmp_path: Path, kill_at: str
) -> None:
    """SIGKILL a writer process mid-upload (past 6 of 16 MiB, parts of 5 MiB) or after the upload but
    before the copy to the final key: the key never appears; at worst a temporary stays under
    `.codedpo-tmp/`, which listing hides; the next write succeeds."""
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(16 * MiB))
    proxy = SlowProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), rate_bytes_per_s=16 * MiB)
    endpoint = proxy.endpoint if kill_at == "mid-upload" else s3_server.endpoint
    argv = [endpoint, s3_store.uri, "big.bin", str(source), kill_at, s3_server.access_key, s3_server.secret_key]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "uploading"
        if kill_at == "mid-upload":
            deadline = time.monotonic() + 30
            while proxy.uploaded < 6 * MiB and time.monotonic() < deadline:
                time.sleep(0.01)
            assert 6 * MiB <= proxy.uploaded < 16 * MiB
        else:
            assert writer.stdout.readline().strip() == "uploaded"
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
        proxy.close()
    assert writer.returncode == -signal.SIGKILL

    assert not s3_store.exists("big.bin")
    assert s3_store.list() == []
    leftovers = raw_objects(s3_server, s3_store)
    assert all(name.startswith(f"{s3_store.prefix}/{TEMP_PREFIX}/") for name in leftovers), leftovers
    if kill_at == "before-publish":
        assert len(leftovers) == 1 and leftovers[0].endswith("-big.bin")

    s3_store.put_file("big.bin", source)
    assert s3_store.get_bytes("big.bin") == source.read_bytes()


# --- integrity -----------------------------------------------------------------------------------


def test_s3_corrupted_object_is_detected(s3_server: S3Server, s3_store: S3Store, tmp_path: Path) -> None:
    s3_store.put_bytes("runs/r1/pairs/pairs.jsonl", b'{"chosen": "a"}\n' * 100)
    client, name = s3_server.raw_client(), f"{s3_store.prefix}/runs/r1/pairs/pairs.jsonl"
    recorded = {k[len("x-amz-meta-") :]: v for k, v in client.stat_object(s3_server.bucket, name).metadata.items()
                if k.lower().startswith("x-amz-meta-")}  # fmt: skip
    assert set(recorded) == {"codedpo-size", "codedpo-sha256"}

    flipped = b'{"chosen": "b"}\n' + b'{"chosen": "a"}\n' * 99  # same size, other bytes, old metadata
    client.put_object(s3_server.bucket, name, io.BytesIO(flipped), len(flipped), metadata=recorded)
    corrupted = r"integrity check failed for s3://.*/runs/r1/pairs/pairs\.jsonl: sha256"
    with pytest.raises(StorageIntegrityError, match=corrupted):
        s3_store.get_bytes("runs/r1/pairs/pairs.jsonl")
    with pytest.raises(StorageIntegrityError, match="pairs.jsonl"):
        s3_store.get_file("runs/r1/pairs/pairs.jsonl", tmp_path / "pairs.jsonl")
    assert list(tmp_path.iterdir()) == []  # nothing left where the download would go

    client.put_object(s3_server.bucket, name, io.BytesIO(b"short"), 5, metadata=recorded)
    with pytest.raises(StorageIntegrityError, match=r"pairs\.jsonl: 5 bytes, expected 1600"):
        s3_store.get_bytes("runs/r1/pairs/pairs.jsonl")

    client.put_object(s3_server.bucket, name, io.BytesIO(b"no metadata"), 11)
    with pytest.raises(StorageIntegrityError, match=r"pairs\.jsonl has no codedpo checksum metadata"):
        s3_store.get_bytes("runs/r1/pairs/pairs.jsonl")


def test_local_corrupted_object_is_detected(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.put_bytes("a/k.jsonl", b"0123456789")
    (tmp_path / "a" / "k.jsonl").write_bytes(b"0123456780")
    with pytest.raises(StorageIntegrityError, match=r"integrity check failed for .*a/k\.jsonl: sha256"):
        store.get_bytes("a/k.jsonl")
    (tmp_path / "a" / "k.jsonl").write_bytes(b"012")
    with pytest.raises(StorageIntegrityError, match=r"k\.jsonl: 3 bytes, expected 10"):
        store.get_bytes("a/k.jsonl")
    (tmp_path / "a" / "hand.jsonl").write_bytes(b"{}\n")
    with pytest.raises(StorageIntegrityError, match=r"hand\.jsonl has no checksum sidecar"):
        store.get_bytes("a/hand.jsonl")


# --- sharded artifacts -------------------------------------------------------------------------


def test_sharded_write_then_read_through_the_manifest(store: Store) -> None:
    prefix = run_prefix("r1", "samples")
    lines = [f'{{"problem_id": "p{i}", "pad": "{"x" * (i % 50)}"}}' for i in range(400)]
    seen_mid_write: list[str] = []

    def produce():
        for i, line in enumerate(lines):
            if i == 300:  # some shards are stored by now, the manifest is not
                with pytest.raises(StorageObjectMissingError, match="no manifest.json .*writer has not finished"):
                    store.read_sharded(prefix)
                seen_mid_write.extend(store.list(prefix))
            yield line

    manifest = store.write_sharded(prefix, produce(), shard_bytes=4000)
    assert len(seen_mid_write) > 1 and not any(k.endswith("manifest.json") for k in seen_mid_write)
    assert manifest.lines == 400 and len(manifest.shards) > 3
    assert all(s.size <= 4000 for s in manifest.shards)
    assert list(store.read_sharded(prefix)) == lines
    assert store.list_runs() == ["r1"] and store.list_stages("r1") == ["samples"]

    rewritten = store.write_sharded(prefix, lines[:10], shard_bytes=4000)
    assert list(store.read_sharded(prefix)) == lines[:10]
    assert store.list(prefix) == sorted([f"{prefix}/{s.name}" for s in rewritten.shards] + [f"{prefix}/manifest.json"])

    empty = store.write_sharded(run_prefix("r1", "pairs"), [], shard_bytes=10)
    assert empty.shards == [] and list(store.read_sharded(run_prefix("r1", "pairs"))) == []


def test_sharded_read_detects_a_replaced_shard(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    manifest = store.write_sharded("art", (f'{{"i": {i}}}' for i in range(100)), shard_bytes=200)
    store.put_bytes(f"art/{manifest.shards[1].name}", b'{"i": -1}\n')  # valid object, wrong content
    reader = store.read_sharded("art")
    with pytest.raises(StorageIntegrityError, match=r"part-00001-.*\(against the manifest\)"):
        list(reader)
    with pytest.raises(ValueError, match="shard_bytes must be > 0"):
        store.write_sharded("art", ["{}"], shard_bytes=0)


# --- errors --------------------------------------------------------------------------------------


def assert_one_clean_line(error: BaseException) -> None:
    assert "\n" not in str(error)
    chained = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    assert chained is None, "no chained minio / urllib3 traceback"


@pytest.mark.parametrize("override", [{"secret_key": "wrong-secret"}, {"access_key": "nobody"}])
def test_wrong_credentials_give_one_clear_error(s3_server: S3Server, override: dict) -> None:
    with pytest.raises(
        StorageAuthError,
        match=rf"^S3 endpoint http://{s3_server.endpoint} refused access to bucket 'codedpo-test' \(\w+\): "
        "wrong credentials",
    ) as caught:
        open_store(f"s3://{s3_server.bucket}/x", settings=s3_server.settings(**override))
    assert_one_clean_line(caught.value)


def test_unreachable_endpoint_gives_one_clear_error() -> None:
    (port,) = free_ports(1)
    settings = S3Settings(endpoint=f"127.0.0.1:{port}", access_key="k", secret_key="s", secure=False, retries=1)
    with pytest.raises(
        StorageConnectionError,
        match=rf"^cannot reach S3 endpoint http://127\.0\.0\.1:{port} \(bucket 'codedpo'\): connection refused$",
    ) as caught:
        open_store("s3://codedpo/prefix", settings=settings)
    assert_one_clean_line(caught.value)


def test_missing_bucket_says_so(s3_server: S3Server) -> None:
    missing = rf"^bucket 'no-such-bucket' does not exist at S3 endpoint http://{s3_server.endpoint}; create it first$"
    with pytest.raises(StorageBucketMissingError, match=missing) as caught:
        open_store("s3://no-such-bucket/x", settings=s3_server.settings())
    assert_one_clean_line(caught.value)


ENV = {"CODEDPO_S3_ENDPOINT": "minio:9000", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}


def test_settings_from_env() -> None:
    settings = S3Settings.from_env(
        {**ENV, "CODEDPO_S3_SECURE": "false", "AWS_REGION": "eu-west-1", "CODEDPO_S3_PART_SIZE_MB": "16"}
    )
    assert (settings.endpoint, settings.secure, settings.region) == ("minio:9000", False, "eu-west-1")
    assert settings.part_size_mb == 16 and settings.retries == 3
    assert S3Settings.from_env({**ENV, "CODEDPO_S3_ENDPOINT": "http://minio:9000"}).url == "http://minio:9000"
    assert S3Settings.from_env(ENV).url == "https://minio:9000"
    assert "secret_key" not in repr(settings) and "access_key" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CODEDPO_S3_ENDPOINT is not set"),
        ({"AWS_SECRET_ACCESS_KEY": ""}, "credentials for minio:9000 are missing"),
        ({"CODEDPO_S3_SECURE": "maybe"}, "CODEDPO_S3_SECURE must be true or false, got 'maybe'"),
        ({"CODEDPO_S3_ENDPOINT": "https://minio:9000", "CODEDPO_S3_SECURE": "0"}, "disagree"),
        ({"CODEDPO_S3_ENDPOINT": "ftp://minio:9000"}, "must be host:port or http"),
        ({"CODEDPO_S3_PART_SIZE_MB": "4"}, r"CODEDPO_S3_PART_SIZE_MB\) must be in \[5, 5120\]"),
        ({"CODEDPO_S3_RETRIES": "many"}, "CODEDPO_S3_RETRIES must be an integer"),
    ],
)
def test_settings_errors_name_the_variable(env: dict, message: str) -> None:
    values = {**ENV, **env} if env else {}
    with pytest.raises(StorageConfigError, match=message):
        S3Settings.from_env(values)


def test_s3_uri_without_bucket_or_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEDPO_S3_ENDPOINT", raising=False)
    with pytest.raises(StorageConfigError, match="names no bucket"):
        open_store("s3:///x")
    with pytest.raises(StorageConfigError, match="CODEDPO_S3_ENDPOINT is not set"):
        open_store("s3://bucket/x")
    with pytest.raises(StorageConfigError, match="invalid bucket name ab"):
        open_store("s3://ab/x", settings=S3Settings(endpoint="127.0.0.1:1", access_key="k", secret_key="s"))


def test_credentials_from_a_mounted_secret(tmp_path: Path) -> None:
    """A Kubernetes Secret mounted as a volume is a folder with one file per key: KFP's
    `mlpipeline-minio-artifact` names them accesskey / secretkey; AWS_* names work too."""
    kfp_style = tmp_path / "kfp"
    kfp_style.mkdir()
    (kfp_style / "accesskey").write_text("from-file-key\n")
    (kfp_style / "secretkey").write_text("from-file-secret\n")
    base = {"CODEDPO_S3_ENDPOINT": "minio:9000", "CODEDPO_S3_SECRET_DIR": str(kfp_style)}
    settings = S3Settings.from_env(base)
    assert (settings.access_key, settings.secret_key, settings.session_token) == (
        "from-file-key", "from-file-secret", None
    )
    # A variable set in the environment wins over its file.
    assert S3Settings.from_env({**base, "AWS_ACCESS_KEY_ID": "env-key"}).access_key == "env-key"

    aws_style = tmp_path / "aws"
    aws_style.mkdir()
    for name, value in [("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_SESSION_TOKEN", "t")]:
        (aws_style / name).write_text(value)
    settings = S3Settings.from_env({**base, "CODEDPO_S3_SECRET_DIR": str(aws_style)})
    assert (settings.access_key, settings.secret_key, settings.session_token) == ("k", "s", "t")


def test_secret_folder_errors_name_the_variable(tmp_path: Path) -> None:
    base = {"CODEDPO_S3_ENDPOINT": "minio:9000"}
    with pytest.raises(StorageConfigError, match=r"CODEDPO_S3_SECRET_DIR='.*/nope' is not a folder"):
        S3Settings.from_env({**base, "CODEDPO_S3_SECRET_DIR": str(tmp_path / "nope")})
    (tmp_path / "accesskey").write_text("k")  # no secret key file
    with pytest.raises(StorageConfigError, match="credentials for minio:9000 are missing.*CODEDPO_S3_SECRET_DIR"):
        S3Settings.from_env({**base, "CODEDPO_S3_SECRET_DIR": str(tmp_path)})


def test_open_store_from_env_and_a_mounted_secret(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a pod does: endpoint from the environment, credentials from the Secret's files."""
    (tmp_path / "accesskey").write_text(s3_server.access_key)
    (tmp_path / "secretkey").write_text(s3_server.secret_key)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CODEDPO_S3_ENDPOINT", f"http://{s3_server.endpoint}")
    monkeypatch.setenv("CODEDPO_S3_SECRET_DIR", str(tmp_path))
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = open_store(f"s3://{s3_server.bucket}/secret-{uuid.uuid4().hex[:8]}")
    store.put_bytes("runs/r1/pairs/a.jsonl", b"{}\n")
    assert store.get_bytes("runs/r1/pairs/a.jsonl") == b"{}\n"
    assert store.list_runs() == ["r1"]
