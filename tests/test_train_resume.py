"""Checkpoints in object storage and resume (components/train/checkpoints.py), against a real S3
server on loopback (SeaweedFS, tests/s3_server.py): a training process is SIGKILLed after its first
checkpoint lands, a half-written checkpoint is planted at a later step, and the restarted run (on a
fresh working folder, as a rescheduled pod would be) resumes from the last complete checkpoint.
The unit tests at the end check the completeness rules on a local store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from s3_server import S3Server, s3_server_fixture  # noqa: F401 - the s3_server fixture
from train_data import engine_pairs_fixture, fast_config, tiny_model  # noqa: F401 - the engine_pairs fixture

from codedpo.components.common.storage import open_store
from codedpo.components.train import checkpoints
from codedpo.components.train.trainer import read_metrics

MAX_STEPS = 10
PLANTED_STEP = 1000  # beyond max_steps: resuming from it would end the run at once with global_step 1000


def _s3_env(server: S3Server) -> dict[str, str]:
    return os.environ | {
        "CODEDPO_S3_ENDPOINT": server.endpoint,
        "CODEDPO_S3_SECURE": "false",
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": "us-east-1",
    }


def _trainer(pairs_uri: str, model: str, config_json: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "codedpo.components.train", "--pairs", pairs_uri, "--model", model,
               "--config-json", config_json]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path, s3_server, engine_pairs):
    root = f"s3://{s3_server.bucket}/resume-{uuid.uuid4().hex[:8]}"
    settings = s3_server.settings()
    open_store(f"{root}/pairs", settings=settings).put_file("pairs.jsonl", engine_pairs)
    output = open_store(f"{root}/train", settings=settings)
    model = tiny_model(tmp_path / "tiny", engine_pairs)
    env = _s3_env(s3_server)

    def config_json(scratch: str) -> str:
        config = fast_config(tmp_path, output_dir=str(tmp_path / scratch), output=f"{root}/train",
                             max_steps=MAX_STEPS, save_steps=2, save_total_limit=2)
        return config.model_dump_json()

    first = _trainer(f"{root}/pairs", model, config_json("scratch1"), tmp_path / "first.log", env)
    try:
        deadline = time.monotonic() + 300
        while checkpoints.latest_complete_checkpoint(output) is None:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint was published in time"
            time.sleep(0.05)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    assert first.returncode == -signal.SIGKILL
    step, manifest = checkpoints.latest_complete_checkpoint(output)
    assert 2 <= step < MAX_STEPS and {"optimizer.pt", "scheduler.pt", "trainer_state.json"} <= set(manifest["files"])
    assert not output.exists("result.json")

    # A later checkpoint whose writer died before its manifest: every file but COMPLETE.
    source = f"{checkpoints.CHECKPOINTS}/{checkpoints.checkpoint_name(step)}"
    planted = f"{checkpoints.CHECKPOINTS}/{checkpoints.checkpoint_name(PLANTED_STEP)}"
    for name in manifest["files"]:
        output.put_bytes(f"{planted}/{name}", output.get_bytes(f"{source}/{name}"))

    second = _trainer(f"{root}/pairs", model, config_json("scratch2"), tmp_path / "second.log", env)
    assert second.wait(300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert f"ignoring {output.where(planted)}: no COMPLETE manifest" in log

    result = json.loads(output.get_bytes("result.json"))
    assert result["resumed_from_step"] == step
    assert result["global_step"] == MAX_STEPS
    # One log line per step over the whole run: up to `step` from the checkpoint's history, the
    # rest trained after the restart; nothing trained twice, nothing from step 0 again.
    output.get_file("metrics.jsonl", tmp_path / "metrics.jsonl")
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, MAX_STEPS + 1))
    # Only the last `save_total_limit` complete checkpoints stay (the planted one is newer: left alone).
    assert checkpoints.latest_complete_checkpoint(output)[0] == MAX_STEPS
    folders = {key.split("/")[1] for key in output.list(checkpoints.CHECKPOINTS) if key.count("/") >= 2}
    assert folders == {f"checkpoint-{MAX_STEPS - 2}", f"checkpoint-{MAX_STEPS}", f"checkpoint-{PLANTED_STEP}"}


def _fake_checkpoint(store, step: int, files: dict[str, bytes], complete: bool = True) -> None:
    prefix = f"{checkpoints.CHECKPOINTS}/{checkpoints.checkpoint_name(step)}"
    for name, data in files.items():
        store.put_bytes(f"{prefix}/{name}", data)
    if complete:
        manifest = {"global_step": step, "files": {n: {"size": len(d), "sha256": ""} for n, d in files.items()}}
        store.put_bytes(f"{prefix}/{checkpoints.MANIFEST}", json.dumps(manifest).encode())


def test_latest_complete_checkpoint_skips_half_written_ones(tmp_path):
    store = open_store(tmp_path / "out")
    assert checkpoints.latest_complete_checkpoint(store) is None
    _fake_checkpoint(store, 2, {"model.safetensors": b"a", "optimizer.pt": b"b"})
    _fake_checkpoint(store, 4, {"model.safetensors": b"a"}, complete=False)  # no manifest
    assert checkpoints.latest_complete_checkpoint(store)[0] == 2
    # A manifest naming a file that is gone (deleted by hand, a pruner racing) is not complete either.
    _fake_checkpoint(store, 6, {"model.safetensors": b"a", "optimizer.pt": b"b"})
    store.delete("checkpoints/checkpoint-6/optimizer.pt")
    assert checkpoints.latest_complete_checkpoint(store)[0] == 2


def test_publish_then_download_round_trips_and_prunes(tmp_path):
    store = open_store(tmp_path / "out")
    for step in (2, 4, 6):
        local = tmp_path / "work" / f"checkpoint-{step}"
        (local / "sub").mkdir(parents=True)
        (local / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (local / "sub" / "weights.bin").write_bytes(os.urandom(64))
        checkpoints.publish_checkpoint(store, local, step, keep=2)
    assert sorted({k.split("/")[1] for k in store.list("checkpoints")}) == ["checkpoint-4", "checkpoint-6"]
    found = checkpoints.latest_complete_checkpoint(store)
    target = checkpoints.download_checkpoint(store, found, tmp_path / "restart")
    assert target == tmp_path / "restart" / "checkpoint-6"
    assert (target / "sub" / "weights.bin").read_bytes() == (tmp_path / "work/checkpoint-6/sub/weights.bin").read_bytes()
    assert not (target / checkpoints.MANIFEST).exists()
