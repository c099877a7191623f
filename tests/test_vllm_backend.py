"""The `vllm` backend around the engine call, with a FAKE `vllm` module.

This machine has no GPU and no vllm package (its wheel is too large to carry), so the engine is
replaced by `fake_vllm`: a module object injected into `sys.modules["vllm"]` whose `LLM` and
`SamplingParams` record how they were called and answer with objects shaped like vLLM's
`RequestOutput` / `CompletionOutput`. It checks what our code sends and how it reads the
answers; it proves nothing about vLLM itself. The backend is unverified on a GPU.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from codedpo.components.llm.base import BackendError, SamplingParams, derive_seed
from codedpo.components.llm.vllm import VllmBackend


@dataclass
class FakeSamplingParams:
    """Fake of vllm.SamplingParams: keeps vLLM's defaults (max_tokens=16 included)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    stop: list[str] | None = None


@dataclass
class FakeCompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletionOutput] = field(default_factory=list)


class FakeLLM:
    """Fake of vllm.LLM: records the constructor's and each call's arguments; answers each
    request with n completions whose text names the prompt and the choice."""

    instances: ClassVar[list[FakeLLM]] = []
    fail_with: ClassVar[Exception | None] = None
    finish_reason: ClassVar[str] = "stop"

    def __init__(self, **kwargs):
        if FakeLLM.fail_with is not None:
            raise FakeLLM.fail_with
        self.kwargs = kwargs
        self.calls: list[tuple[str, list, list, dict]] = []
        FakeLLM.instances.append(self)

    def _answer(self, key, params):
        return FakeRequestOutput(
            prompt_token_ids=[1] * len(key),
            outputs=[
                FakeCompletionOutput(f"{key}#{k}", [7] * (k + 2), "length" if k == 1 else self.finish_reason)
                for k in range(params.n)
            ],
        )

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append(("generate", prompts, sampling_params, {"use_tqdm": use_tqdm}))
        return [self._answer(p, sp) for p, sp in zip(prompts, sampling_params)]

    def chat(self, messages, sampling_params, use_tqdm=True, add_generation_prompt=True):
        self.calls.append(("chat", messages, sampling_params,
                           {"use_tqdm": use_tqdm, "add_generation_prompt": add_generation_prompt}))
        return [self._answer(m[-1]["content"], sp) for m, sp in zip(messages, sampling_params)]


@pytest.fixture
def fake_vllm(monkeypatch):
    """The fake `vllm` module, injected for one test."""
    module = types.ModuleType("vllm")
    module.__version__ = "0.0.0-fake"
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    FakeLLM.instances = []
    FakeLLM.fail_with = None
    FakeLLM.finish_reason = "stop"
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_engine_is_built_once_with_our_settings(fake_vllm):
    backend = VllmBackend("org/model", tensor_parallel_size=4, dtype="bfloat16", gpu_memory_utilization=0.8, seed=3)
    (llm,) = FakeLLM.instances
    assert llm.kwargs == {
        "model": "org/model", "tensor_parallel_size": 4, "dtype": "bfloat16", "gpu_memory_utilization": 0.8, "seed": 3
    }
    assert backend.describe() == {
        "backend": "vllm", "model": "org/model", "tensor_parallel_size": 4, "dtype": "bfloat16",
        "gpu_memory_utilization": 0.8, "vllm": "0.0.0-fake",
    }


def test_text_prompts_use_generate_with_explicit_params(fake_vllm):
    backend = VllmBackend("org/model")
    params = SamplingParams(n=3, temperature=1.5, top_p=0.95, max_tokens=512, seed=11, stop=("\ndef ",))
    results = backend.generate(["def f():\n", "def g():\n"], params)
    ((kind, prompts, sampling, options),) = FakeLLM.instances[0].calls
    assert kind == "generate" and prompts == ["def f():\n", "def g():\n"] and options == {"use_tqdm": False}
    for index, sp in enumerate(sampling):
        assert sp.max_tokens == 512  # never vLLM's default of 16
        assert (sp.n, sp.temperature, sp.top_p, sp.stop) == (3, 1.5, 0.95, ["\ndef "])
        assert sp.seed == derive_seed(11, index)  # one seed per prompt, as the openai backend
    assert [[c.text for c in r] for r in results] == [[f"def f():\n#{k}" for k in range(3)],
                                                       [f"def g():\n#{k}" for k in range(3)]]
    first = results[0]
    assert [c.num_tokens for c in first] == [2, 3, 4] and first[0].prompt_tokens == len("def f():\n")
    assert [c.finish_reason for c in first] == ["stop", "length", "stop"]
    assert first[0].seed == derive_seed(11, 0) and results[1][0].seed == derive_seed(11, 1)
    assert backend.stats.completions == 6


def test_chat_prompts_use_chat_and_mixed_calls_keep_input_order(fake_vllm):
    backend = VllmBackend("org/model")
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "task A"}]
    results = backend.generate(["text B", chat, "text C"], SamplingParams(n=1, max_tokens=64, seed=1))
    calls = FakeLLM.instances[0].calls
    assert [c[0] for c in calls] == ["generate", "chat"]
    assert calls[1][1] == [chat] and calls[1][3] == {"use_tqdm": False, "add_generation_prompt": True}
    assert calls[1][2][0].seed == derive_seed(1, 1)  # seeded by the prompt's index in the call
    assert [r[0].text for r in results] == ["text B#0", "task A#0", "text C#0"]


def test_greedy_decoding_sends_no_seed(fake_vllm):
    backend = VllmBackend("org/model")
    (result,) = backend.generate(["x"], SamplingParams(n=1, temperature=0, max_tokens=8))
    (sp,) = FakeLLM.instances[0].calls[0][2]
    assert sp.temperature == 0 and sp.seed is None and result[0].seed is None and sp.stop is None


def test_an_aborted_request_is_a_clear_error(fake_vllm):
    FakeLLM.finish_reason = "abort"
    with pytest.raises(BackendError, match="finish_reason 'abort'") as error:
        VllmBackend("org/model").generate(["x"], SamplingParams(n=1, max_tokens=8, seed=0))
    assert "\n" not in str(error.value)


def test_missing_vllm_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(BackendError, match=r"^vllm backend: the vllm package is not installed") as error:
        VllmBackend("org/model")
    assert "\n" not in str(error.value) and "GPU" in str(error.value)


def test_wrong_model_name_is_one_clear_line(fake_vllm, tmp_path):
    FakeLLM.fail_with = OSError(
        "no-such/model is not a local folder and is not a valid model identifier listed on "
        "'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a token"
    )
    with pytest.raises(BackendError) as error:
        VllmBackend("no-such/model")
    message = str(error.value)
    assert message.startswith("vllm backend: cannot load model 'no-such/model': no-such/model is not a local folder")
    assert "\n" not in message
    FakeLLM.fail_with = None
    missing = str(tmp_path / "checkpoints" / "none")
    with pytest.raises(BackendError, match=r"cannot load model '.*none': no such checkpoint folder"):
        VllmBackend(missing)
    assert FakeLLM.instances == []  # a missing folder is reported before the engine starts


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"tensor_parallel_size": 0}, "tensor_parallel_size must be at least 1"),
     ({"gpu_memory_utilization": 1.5}, r"gpu_memory_utilization must be in \(0, 1\]")],
)
def test_bad_settings(fake_vllm, kwargs, match):
    with pytest.raises(BackendError, match=match):
        VllmBackend("org/model", **kwargs)
