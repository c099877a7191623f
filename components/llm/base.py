"""The model client: one interface, `generate(prompts, params) -> completions per prompt`.

    SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=1024, seed=None, stop=())
    Backend.generate(prompts: list[str | list[dict]], params) -> list[list[Completion]]
    Backend.describe() -> dict                      what generated (for SampleSet.generator)

A prompt is plain text (a base model continues it) or a list of chat messages (the backend
applies the model's chat template). The result keeps the input order: `result[i]` holds the
`params.n` completions of `prompts[i]`. Names follow vLLM's `SamplingParams` (OpenAI's names), so
a run configuration reads the same whichever backend it picks.

The backends, one file each: `hf.py` (transformers, CPU or GPU), `openai.py` (any server with
OpenAI's completions API), `vllm.py` (vLLM's offline engine); `factory.make_backend` builds the
one a run's `sampling` section names. Each imports its heavy library only when it is built, so
the CPU stages import `codedpo.components.llm` without torch, transformers or vLLM.
"""

from __future__ import annotations

import hashlib
import random
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Literal

from codedpo.components.common.errors import InputError
from codedpo.components.llm.prompts import Prompt

FinishReason = Literal["stop", "length"]


class BackendError(RuntimeError):
    """A backend cannot start or run (model not found, no chat template, ...): one line saying why."""


class SamplingParamsError(InputError):
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
