"""`make_backend` / `make_templates`: the `sampling` section turned into a backend and templates,
and bad input giving one clear line that names what is wrong.

The hf backend loads the tiny random Llama of `tests/tiny_model.py` from its folder; the openai
backend is pointed at a closed loopback port (nothing listens: a real connection refusal); the
vllm branch uses a fake `vllm` module (`fake_vllm`, see tests/test_vllm_backend.py: no GPU here).
"""

from __future__ import annotations

import socket
import sys
import types

import pytest

from codedpo.components.common.config import SamplingConfig
from codedpo.components.llm.base import BackendError, SamplingParams
from codedpo.components.llm.factory import make_backend, make_templates
from codedpo.components.llm.prompts import BASE_TEMPLATES, CHAT_TEMPLATES, TemplateError


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_replay_is_not_a_backend():
    with pytest.raises(BackendError) as error:
        make_backend(SamplingConfig())
    assert one_line(error).startswith("sampling.backend 'replay' imports samples from samples.path")


def test_hf_backend_from_the_config(tmp_path):
    import torch
    from tiny_model import save_tiny_model

    torch.manual_seed(0)
    save_tiny_model(tmp_path, ["def add(a, b):\n    return a + b\n"] * 8)
    backend = make_backend(SamplingConfig(backend="hf", model=str(tmp_path), batch_size=3, device="cpu"))
    assert backend.describe()["batch_size"] == 3 and backend.describe()["device"] == "cpu"
    (result,) = backend.generate(["def add("], SamplingParams(n=2, max_tokens=4, seed=0))
    assert len(result) == 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["no-such-org/no-such-model", "./checkpoints/missing"])
def test_hf_model_that_is_not_here_is_one_line_without_trying_the_hub(model):
    with pytest.raises(BackendError) as error:
        make_backend(SamplingConfig(backend="hf", model=model, device="cpu"))
    message = one_line(error)
    assert message.startswith(f"hf backend: cannot load model {model!r}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_openai_backend_from_the_config_and_an_unreachable_endpoint(monkeypatch):
    from codedpo.components.llm.openai import EndpointUnreachableError, OpenAIBackend

    monkeypatch.setenv("MY_KEY", "secret")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    sampling = SamplingConfig(backend="openai", model="tiny", base_url=url, api_key_env="MY_KEY",
                              max_concurrency=3, max_retries=0, request_timeout_s=5)
    backend = make_backend(sampling)
    assert isinstance(backend, OpenAIBackend)
    assert (backend.max_concurrency, backend.max_retries, backend.timeout) == (3, 0, 5)
    assert backend._headers()["Authorization"] == "Bearer secret"
    with pytest.raises(EndpointUnreachableError) as error:
        backend.generate(["x"], SamplingParams(max_tokens=2, seed=0))
    assert url in one_line(error)


def test_vllm_backend_from_the_config(monkeypatch):
    calls = []
    fake_vllm = types.ModuleType("vllm")  # a FAKE vllm: records the engine's arguments
    fake_vllm.LLM = lambda **kwargs: calls.append(kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    make_backend(SamplingConfig(backend="vllm", model="org/m", tensor_parallel_size=2, dtype="bfloat16",
                                gpu_memory_utilization=0.7, seed=5))
    assert calls == [{"model": "org/m", "tensor_parallel_size": 2, "dtype": "bfloat16",
                      "gpu_memory_utilization": 0.7, "seed": 5}]


def test_templates_default_per_style_and_overrides():
    assert make_templates(SamplingConfig(style="chat")) == CHAT_TEMPLATES
    assert make_templates(SamplingConfig(style="base")) == BASE_TEMPLATES
    custom = make_templates(SamplingConfig(code_template="Solve:\n{prompt}", system_template=""))
    assert custom.code == "Solve:\n{prompt}" and custom.tests == CHAT_TEMPLATES.tests and custom.system is None
    assert make_templates(SamplingConfig(system_template="Be terse.")).system == "Be terse."


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tests_template": "Write tests for {prompt}"}, "sampling.tests_template: missing placeholder {entry_point}"),
        ({"code_template": "Solve it."}, "sampling.code_template: missing placeholder {prompt}"),
        ({"code_template": "{task}"}, "sampling.code_template: unknown placeholder {task}"),
        ({"code_template": "{prompt"}, "sampling.code_template: expected '}' before end of string"),
        ({"style": "base", "system_template": "Hi"}, "sampling.system_template: only for sampling.style 'chat'"),
    ],
)
def test_a_bad_template_is_one_line_naming_the_config_field(settings, message):
    with pytest.raises(TemplateError) as error:
        make_templates(SamplingConfig(**settings))
    assert one_line(error).startswith(message)
