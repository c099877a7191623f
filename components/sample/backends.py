"""Sampling backends: one interface, `generate(prompts, params) -> completions per prompt`.

    SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=1024, seed=None, stop=())
    Backend.generate(prompts: list[str | list[dict]], params) -> list[list[Completion]]
    Backend.describe() -> dict                      what generated (for SampleSet.generator)
    HfBackend(model, *, batch_size=8, device="auto", dtype="auto", allow_download=False)
                                                       transformers, CPU or GPU

A prompt is plain text (a base model continues it) or a list of chat messages (the backend
applies the model's chat template). The result keeps the input order: `result[i]` holds the
`params.n` completions of `prompts[i]`. Names follow vLLM's `SamplingParams` (OpenAI's names), so
a run configuration reads the same whichever backend it picks.

Only this module's `HfBackend` needs torch and transformers, and it imports them when it is
built: the CPU stages import `codedpo.components.sample` without them.
"""

from __future__ import annotations

import hashlib
import random
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Literal

from codedpo.components.sample.prompts import Prompt

FinishReason = Literal["stop", "length"]


class BackendError(RuntimeError):
    """A backend cannot start or run (model not found, no chat template, ...): one line saying why."""


class SamplingParamsError(ValueError):
    """A sampling parameter is out of range; the message names it and the value."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample, in vLLM's (and OpenAI's) names.

    n: completions per prompt, >= 1.
    temperature: >= 0; 0 means greedy decoding (then n must be 1: every sample would be the same).
    top_p: nucleus sampling mass in (0, 1]; 1 = off.
    max_tokens: new tokens per completion, >= 1. The default is 1024, not vLLM's 16: 16 tokens
        cut off every solution and test suite (a HumanEval solution is ~50-300 tokens, and a chat
        model adds a sentence and a fence around it), so a forgotten setting would silently turn
        every sample into a `truncated` discard.
    seed: the random seed; None draws one at sampling time and records it (see `resolve_seed`),
        so every run can be reproduced.
    stop: strings that end a completion; the text is cut before the first one (as vLLM does).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            (
                "n",
                self.n,
                isinstance(self.n, int) and self.n >= 1,
                "must be at least 1",
            ),
            (
                "temperature",
                self.temperature,
                self.temperature >= 0,
                "must be non-negative",
            ),
            ("top_p", self.top_p, 0 < self.top_p <= 1, "must be in (0, 1]"),
            (
                "max_tokens",
                self.max_tokens,
                isinstance(self.max_tokens, int) and self.max_tokens >= 1,
                "must be at least 1",
            ),
            (
                "seed",
                self.seed,
                self.seed is None or (isinstance(self.seed, int) and self.seed >= 0),
                "must be a non-negative integer or None",
            ),
            (
                "stop",
                self.stop,
                all(isinstance(s, str) and s for s in self.stop),
                "must be non-empty strings",
            ),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise SamplingParamsError(f"{name} {rule}, got {value!r}")
        if self.temperature == 0 and self.n > 1:
            raise SamplingParamsError(
                f"n must be 1 for greedy decoding (temperature 0 gives n identical samples), got n={self.n}"
            )

    @property
    def greedy(self) -> bool:
        """Whether this is greedy decoding (temperature 0)."""
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for records (`SampleSet.sampling`)."""
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


def resolve_seed(seed: int | None) -> int:
    """`seed`, or a fresh random one when it is None (recorded by the caller, so it reproduces)."""
    return random.SystemRandom().randrange(2**31) if seed is None else seed


def derive_seed(seed: int, *parts: object) -> int:
    """A seed derived from `seed` and labels (a batch index, "code" / "tests"): stable across
    runs and platforms (sha256, not Python's salted `hash`)."""
    text = ":".join([str(seed), *map(str, parts)])
    return (
        int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big")
        & 0x7FFFFFFF
    )


@dataclass(frozen=True)
class Completion:
    """One sampled completion.

    `num_tokens` counts the generated tokens (the end-of-sequence token included, padding not);
    `prompt_tokens` the prompt's; together they give the throughput. `seed` is the seed the
    sampler was set to for the batch that produced this completion (None for greedy decoding,
    which draws nothing).
    """

    text: str
    num_tokens: int
    prompt_tokens: int
    finish_reason: FinishReason
    seed: int | None = None


@dataclass
class BackendStats:
    """What a backend has generated so far (for progress lines and benchmarks)."""

    prompts: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def add(self, results: list[list[Completion]], seconds: float) -> None:
        self.prompts += len(results)
        for completions in results:
            self.completions += len(completions)
            self.generated_tokens += sum(c.num_tokens for c in completions)
            self.prompt_tokens += completions[0].prompt_tokens if completions else 0
        self.seconds += seconds

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.completions / self.seconds if self.seconds else 0.0


class Backend(ABC):
    """A model that samples completions. Subclasses implement `_generate` and `describe`."""

    name: str = "backend"

    def __init__(self) -> None:
        self.stats = BackendStats()

    def generate(
        self, prompts: list[Prompt], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions for each prompt, in input order. With `params.seed` None a seed
        is drawn here; the seeds used are in each `Completion.seed`."""
        if not prompts:
            return []
        if params.seed is None:
            params = SamplingParams(**{**params.to_dict(), "seed": resolve_seed(None)})
        start = time.perf_counter()
        results = self._generate(prompts, params)
        if len(results) != len(prompts) or any(len(r) != params.n for r in results):
            raise BackendError(
                f"{self.name} backend returned a wrong number of completions"
            )
        self.stats.add(results, time.perf_counter() - start)
        return results

    @abstractmethod
    def _generate(
        self, prompts: list[Prompt], params: SamplingParams
    ) -> list[list[Completion]]:
        """Generate with a resolved seed; same contract as `generate`."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What generates (backend, model, versions, settings): `SampleSet.generator`."""


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first stop string (excluded, as vLLM does), and whether one was found."""
    positions = [index for index in (text.find(s) for s in stop) if index >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


class HfBackend(Backend):
    """Sampling with `transformers` generation, batched, on CPU or GPU (laptops and tests).

    model: a local checkpoint folder or a Hugging Face model id already in the local cache.
        Only local files are read (`local_files_only`) unless `allow_download`: a model that
        is not there fails at once with one line, instead of retrying the Hub for a minute
        on a machine without internet.
    batch_size: prompts per `generate` call (each expands to `n` rows); 1 = unbatched.
    device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    dtype: "auto" (the checkpoint's, float32 on CPU) or a torch dtype name ("bfloat16").

    Batches are left-padded (decoder-only models continue from the right edge) with an attention
    mask; a tokenizer without a pad token gets its end-of-sequence token as pad. Sampling is
    seeded per batch with `derive_seed(seed, first prompt index)`: a run reproduces with the
    same seed, batch size and device (like vLLM, the samples of one prompt depend on what it was
    batched with). Greedy decoding does not depend on batching, up to floating-point ties.
    """

    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        allow_download: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        if self.batch_size < 1:
            raise BackendError(
                f"hf backend: batch_size must be at least 1, got {self.batch_size}"
            )
        try:
            import torch
            import transformers
        except ImportError as error:
            raise BackendError(
                f"hf backend needs torch and transformers ({error})"
            ) from None
        self._torch: Any = torch
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        torch_dtype: Any = "auto"
        if self.dtype == "auto":
            torch_dtype = torch.float32 if self._device.type == "cpu" else "auto"
        else:
            torch_dtype = getattr(torch, self.dtype, None)
            if not isinstance(torch_dtype, torch.dtype):
                raise BackendError(
                    f"hf backend: unknown dtype {self.dtype!r} (use 'auto', 'float32', 'bfloat16', ...)"
                )
        local = not allow_download
        try:
            self._tokenizer: Any = transformers.AutoTokenizer.from_pretrained(
                self.model, local_files_only=local
            )
            self._model: Any = transformers.AutoModelForCausalLM.from_pretrained(
                self.model, dtype=torch_dtype, local_files_only=local
            )
        except (OSError, ValueError) as error:
            first = next(
                (line.strip() for line in str(error).splitlines() if line.strip()),
                type(error).__name__,
            )
            raise BackendError(
                f"hf backend: cannot load model {self.model!r}: not a checkpoint folder, nor a model id in the "
                f"local Hugging Face cache ({first})"
            ) from None
        loaded: Any = self._model
        loaded.to(self._device).eval()
        tokenizer = self._tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise BackendError(
                    f"hf backend: the tokenizer of {self.model!r} has neither a pad nor an eos token"
                )
            tokenizer.pad_token = tokenizer.eos_token
        eos = self._model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._transformers_version = transformers.__version__

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "device": str(self._device),
            "dtype": str(self._model.dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
            "transformers": self._transformers_version,
        }

    def _text(self, prompt: Prompt) -> str:
        """The prompt as text: a chat is rendered with the tokenizer's chat template."""
        if isinstance(prompt, str):
            return prompt
        if not self._tokenizer.chat_template:
            raise BackendError(
                f"hf backend: the tokenizer of {self.model!r} has no chat template; use prompt templates of style 'base'"
            )
        text: str = self._tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )
        return text

    def _generate(
        self, prompts: list[Prompt], params: SamplingParams
    ) -> list[list[Completion]]:
        assert params.seed is not None  # resolved by `generate`
        texts = [self._text(prompt) for prompt in prompts]
        results: list[list[Completion]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            seed = derive_seed(params.seed, start)
            # A chat template already holds the special tokens (BOS); plain text gets them added.
            special = all(
                isinstance(p, str) for p in prompts[start : start + self.batch_size]
            )
            results.extend(
                self._generate_batch(batch, params, seed, add_special_tokens=special)
            )
        return results

    def _generate_batch(
        self,
        texts: list[str],
        params: SamplingParams,
        seed: int,
        *,
        add_special_tokens: bool,
    ) -> list[list[Completion]]:
        torch = self._torch
        tokenizer = self._tokenizer
        encoded = tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            add_special_tokens=add_special_tokens,
        )
        encoded = {
            key: value.to(self._device)
            for key, value in encoded.items()
            if key in ("input_ids", "attention_mask")
        }
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "num_return_sequences": params.n,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=0,
            )
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        torch.manual_seed(seed)
        with torch.inference_mode():
            output = self._model.generate(**encoded, **kwargs)
        width = encoded["input_ids"].shape[1]
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        ended = self._eos_ids | {tokenizer.pad_token_id}
        results: list[list[Completion]] = []
        for row, tokens in enumerate(output[:, width:].tolist()):
            length = next(
                (i + 1 for i, token in enumerate(tokens) if token in ended), len(tokens)
            )
            finished = length < len(tokens) or (bool(tokens) and tokens[-1] in ended)
            text: str = tokenizer.decode(tokens[:length], skip_special_tokens=True)
            text, stopped = cut_at_stop(text, params.stop)
            reason: FinishReason = "stop" if finished or stopped else "length"
            if (
                length
                and tokens[length - 1] not in self._eos_ids
                and tokens[length - 1] == tokenizer.pad_token_id
            ):
                length -= 1  # the padding after a row that a stop string ended is not generated
            completion = Completion(
                text,
                length,
                int(prompt_lengths[row // params.n]),
                reason,
                None if params.greedy else seed,
            )
            if row % params.n == 0:
                results.append([])
            results[-1].append(completion)
        return results
