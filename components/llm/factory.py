"""The run configuration's `sampling` section turned into a backend and prompt templates.

    make_backend(sampling: SamplingConfig) -> Backend
    make_templates(sampling: SamplingConfig) -> PromptTemplates

Each backend is imported only in its own branch (vLLM and torch are heavy and absent from CPU
images). `replay` is not a model: it imports samples from a file (`sample/replay.py`), so asking
it for a backend is an error. Bad settings raise one line naming the config field.
"""

from __future__ import annotations

import dataclasses

from codedpo.components.common.config import SamplingConfig
from codedpo.components.llm.base import Backend, BackendError
from codedpo.components.llm.prompts import PromptTemplates, TemplateError, check_template, default_templates


def make_backend(sampling: SamplingConfig) -> Backend:
    """The backend `sampling.backend` names, built from the section's settings. Loading the
    model happens here (hf, vllm), so a wrong model fails before any work starts."""
    if sampling.backend == "replay":
        raise BackendError(
            "sampling.backend 'replay' imports samples from samples.path and has no model to sample "
            "from; choose 'hf', 'openai' or 'vllm' to write tasks and sample codes and tests"
        )
    if not sampling.model:
        raise BackendError(f"sampling.model: backend {sampling.backend!r} needs a model")
    if sampling.backend == "hf":
        from codedpo.components.llm.hf import HfBackend

        return HfBackend(sampling.model, batch_size=sampling.batch_size, device=sampling.device, dtype=sampling.dtype)
    if sampling.backend == "openai":
        from codedpo.components.llm.openai import OpenAIBackend

        if not sampling.base_url:
            raise BackendError("sampling.base_url: backend 'openai' needs the server's URL (http://host:8000/v1)")
        return OpenAIBackend(
            sampling.base_url,
            sampling.model,
            api_key_env=sampling.api_key_env,
            max_concurrency=sampling.max_concurrency,
            max_retries=sampling.max_retries,
            timeout=sampling.request_timeout_s,
        )
    if sampling.backend == "vllm":
        from codedpo.components.llm.vllm import VllmBackend

        return VllmBackend(
            sampling.model,
            tensor_parallel_size=sampling.tensor_parallel_size,
            dtype=sampling.dtype,
            gpu_memory_utilization=sampling.gpu_memory_utilization,
            seed=sampling.seed,
        )
    raise BackendError(f"sampling.backend: unknown backend {sampling.backend!r} (hf, openai, vllm, replay)")


_FIELDS = {"code": "code_template", "tests": "tests_template", "system": "system_template"}


def make_templates(sampling: SamplingConfig) -> PromptTemplates:
    """The default templates of `sampling.style`, with `code_template`, `tests_template` and
    `system_template` replacing theirs when set. An empty `system_template` ("") removes the
    default system message (some chat templates reject one). A bad template raises
    TemplateError with one line naming the config field, e.g.
    `sampling.tests_template: missing placeholder {entry_point}`."""
    templates = default_templates(sampling.style)
    overrides = {"code": sampling.code_template, "tests": sampling.tests_template, "system": sampling.system_template}
    changes: dict[str, str | None] = {}
    for name, template in overrides.items():
        if template is None:
            continue
        field = f"sampling.{_FIELDS[name]}"
        if name == "system" and sampling.style == "base":
            raise TemplateError(f"{field}: only for sampling.style 'chat' (a base model has no system role)")
        if name == "system" and template == "":
            changes["system"] = None
            continue
        try:
            check_template(name, template)
        except TemplateError as error:
            raise TemplateError(f"{field}: {_reason(str(error))}") from None
        changes[name] = template
    return dataclasses.replace(templates, **changes) if changes else templates


def _reason(message: str) -> str:
    """check_template's message without its "prompt template 'x'" subject (the caller names the
    config field instead): "missing placeholder {entry_point}"."""
    for marker in (" is missing the placeholder ", " has an unknown placeholder "):
        if marker in message:
            kind = "missing placeholder " if "missing" in marker else "unknown placeholder "
            return kind + message.split(marker, 1)[1]
    return message.split(": ", 1)[1] if ": " in message else message
