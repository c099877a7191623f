"""The `vllm` backend: vLLM's offline engine, for the GPU sampler image.

    VllmBackend(model, *, tensor_parallel_size=1, dtype="auto", gpu_memory_utilization=0.9,
                seed=0)

UNVERIFIED ON A GPU: this module is written against vLLM's documented offline API and tested
only with a fake `vllm` module (`tests/test_vllm_backend.py`), because the development machine
has no GPU and vLLM's wheel cannot be carried to one. The calls it makes:

- `vllm.LLM(model=..., tensor_parallel_size=..., dtype=..., gpu_memory_utilization=..., seed=...)`
  once, when the backend is built (loading the weights is the expensive part).
- Text prompts (base style): `LLM.generate(prompts, sampling_params, use_tqdm=False)`.
  Chat prompts (lists of messages): `LLM.chat(conversations, sampling_params, use_tqdm=False,
  add_generation_prompt=True)`, which applies the model's chat template. One call holds one
  kind; `generate` here sends each kind in its own engine call and merges in input order.
  (Checked against vLLM's `vllm/entrypoints/llm.py`: `chat` takes a list of conversations and,
  like `generate`, one `SamplingParams` for all prompts or a list paired with them.)
- `vllm.SamplingParams(n=, temperature=, top_p=, max_tokens=, seed=, stop=)`, one per prompt,
  seeded `derive_seed(seed, i)` like the openai backend. `max_tokens` is always passed:
  vLLM's default of 16 tokens would cut off every answer.
- `RequestOutput.prompt_token_ids` and `.outputs[k]` with `.text`, `.token_ids` and
  `.finish_reason` ("stop" or "length"; anything else, such as "abort", is an error). vLLM
  removes stop strings from the text itself.

vLLM is imported when the backend is built, never at import, so CPU images import this module
without it. Errors are one line (`BackendError`): vLLM missing, a model that cannot be loaded
(named), a failing engine call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codedpo.components.llm.base import Backend, BackendError, Completion, FinishReason, SamplingParams, derive_seed
from codedpo.components.llm.prompts import Prompt


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def looks_like_path(model: str) -> bool:
    """Whether `model` names a folder rather than a Hugging Face id ("org/name")."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or Path(model).exists()


class VllmBackend(Backend):
    """Sampling with vLLM's offline engine (see the module docstring; unverified on a GPU).

    model: a checkpoint folder or a Hugging Face id. A missing folder is reported before vLLM
        starts. An id is resolved by vLLM itself: from the Hugging Face cache (the cluster's
        model-cache volume), else downloaded with HF_TOKEN, unless HF_HUB_OFFLINE=1 is set.
    tensor_parallel_size: GPUs the model is split over.
    dtype: "auto" or a dtype name vLLM knows ("bfloat16", "float16").
    gpu_memory_utilization: share of each GPU's memory vLLM may take (weights + KV cache).
    seed: the engine's seed; every request also carries its own (derived) seed.
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.tensor_parallel_size = tensor_parallel_size
        self.dtype = dtype
        self.gpu_memory_utilization = gpu_memory_utilization
        if tensor_parallel_size < 1:
            raise BackendError(f"vllm backend: tensor_parallel_size must be at least 1, got {tensor_parallel_size}")
        if not 0 < gpu_memory_utilization <= 1:
            raise BackendError(
                f"vllm backend: gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
            )
        if looks_like_path(model) and not Path(model).expanduser().is_dir():
            raise BackendError(f"vllm backend: cannot load model {model!r}: no such checkpoint folder")
        try:
            import vllm
        except ImportError as error:
            raise BackendError(
                f"vllm backend: the vllm package is not installed ({error}); it needs a GPU machine "
                "(the sampler image), or use sampling.backend 'hf' or 'openai'"
            ) from None
        self._vllm: Any = vllm
        self._version = str(getattr(vllm, "__version__", "unknown"))
        try:
            self._llm: Any = vllm.LLM(
                model=model,
                tensor_parallel_size=tensor_parallel_size,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                seed=seed,
            )
        except Exception as error:  # noqa: BLE001 - vLLM raises OSError, ValueError, RuntimeError, hub errors
            raise BackendError(f"vllm backend: cannot load model {model!r}: {_first_line(error)}") from None

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "vllm": self._version,
        }

    def _params(self, params: SamplingParams, index: int) -> Any:
        assert params.seed is not None  # resolved by `generate`
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=None if params.greedy else derive_seed(params.seed, index),
            stop=list(params.stop) or None,
        )

    def _call(self, prompts: list[Prompt], indices: list[int], params: SamplingParams) -> list[Any]:
        sampling = [self._params(params, index) for index in indices]
        chat = not isinstance(prompts[0], str)
        try:
            if chat:
                outputs = self._llm.chat(prompts, sampling, use_tqdm=False, add_generation_prompt=True)
            else:
                outputs = self._llm.generate(prompts, sampling, use_tqdm=False)
        except Exception as error:  # noqa: BLE001 - any engine failure becomes one line naming the call
            kind = "chat" if chat else "generate"
            raise BackendError(f"vllm backend: LLM.{kind} failed for {self.model!r}: {_first_line(error)}") from None
        if len(outputs) != len(prompts):
            raise BackendError(f"vllm backend: {len(outputs)} outputs for {len(prompts)} prompts")
        return list(outputs)

    def _completions(self, output: Any, params: SamplingParams, index: int) -> list[Completion]:
        prompt_tokens = len(getattr(output, "prompt_token_ids", None) or [])
        seed = None if params.greedy else derive_seed(params.seed or 0, index)
        completions = []
        for choice in output.outputs:
            if choice.finish_reason not in ("stop", "length"):
                raise BackendError(
                    f"vllm backend: a request ended with finish_reason {choice.finish_reason!r} (expected stop or length)"
                )
            reason: FinishReason = choice.finish_reason
            completions.append(Completion(choice.text, len(choice.token_ids), prompt_tokens, reason, seed))
        return completions

    def _generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion] | None] = [None] * len(prompts)
        for chat in (False, True):
            indices = [i for i, prompt in enumerate(prompts) if isinstance(prompt, str) != chat]
            if not indices:
                continue
            outputs = self._call([prompts[i] for i in indices], indices, params)
            for index, output in zip(indices, outputs):
                results[index] = self._completions(output, params, index)
        return [r for r in results if r is not None]
