"""Shared fixtures and the `sandbox` marker's skip rule.

A test marked `@pytest.mark.sandbox` needs gVisor's `runsc` on PATH and root (runsc creates the
sandbox's namespaces). Where either is missing it is skipped with the reason, except on CI
(`CI` set, as `.ci/run` runs), where the install step provides runsc: there a missing sandbox
is an error, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import Candidate, SampleSet, content_id

if TYPE_CHECKING:
    from openai_server import OpenAIServer


def runsc_unusable_reason() -> str | None:
    """Why runsc sandboxes cannot start here, or None when they can."""
    if shutil.which("runsc") is None:
        return "needs gVisor's runsc on PATH (`apt-get install runsc`)"
    if os.geteuid() != 0:
        return "needs root: runsc creates the sandbox's namespaces"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = runsc_unusable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI must run the sandbox tests, but this machine {reason}")
    skip = pytest.mark.skip(reason=f"sandbox test: {reason}")
    for item in items:
        if item.get_closest_marker("sandbox") is not None:
            item.add_marker(skip)


def build_sample(
    problem_id: str, codes: list[str], tests: list[str], entry_point: str = "f", prompt: str = ""
) -> SampleSet:
    """A SampleSet with the given code and test texts, ids by content (as the sample stage does)."""
    return SampleSet(
        problem_id=problem_id,
        prompt=prompt or f"def {entry_point}(x):\n",
        entry_point=entry_point,
        codes=[Candidate(id=content_id(text, "code"), text=text) for text in codes],
        tests=[Candidate(id=content_id(text, "test"), text=text) for text in tests],
    )


# Small limits keep the sandbox tests fast (and the hostile ones cheap to contain).
SMALL_LIMITS = {"timeout_s": 1.0, "memory_mib": 256, "output_limit_kib": 64, "max_processes": 8}


@pytest.fixture(scope="session")
def make_sample() -> Callable[..., SampleSet]:
    """Factory: make_sample(problem_id, codes, tests, entry_point="f") -> SampleSet."""
    return build_sample


@pytest.fixture(scope="session")
def small_config() -> Callable[..., ExecuteConfig]:
    """Factory: small_config(**overrides) -> ExecuteConfig with small limits and no disk cache
    (cache_dir="" keeps the outcome cache in memory) unless overridden."""

    def make(**overrides: object) -> ExecuteConfig:
        values: dict[str, object] = {**SMALL_LIMITS, "cache_dir": "", "workers": 2}
        values.update(overrides)
        return ExecuteConfig(**values)

    return make


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["OpenAIServer"]:
    """Our loopback OpenAI-compatible server (`openai_server.py`, not `vllm serve`), serving a
    tiny random Llama (`tiny_model.py`) under the name 'tiny-llama'."""
    import torch
    from openai_server import OpenAIServer
    from tiny_model import save_tiny_model

    from codedpo.components.llm.hf import HfBackend

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    save_tiny_model(folder, ["def add(a, b):\n    return a + b\n"] * 4, chat_template=True)
    server = OpenAIServer(HfBackend(str(folder), batch_size=1, device="cpu")).start()
    yield server
    server.stop()
