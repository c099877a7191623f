"""The `hf` backend: transformers generation, batched, on CPU or GPU (laptops and tests).

    HfBackend(model, *, batch_size=8, device="auto", dtype="auto", allow_download=False)

torch and transformers are imported when a backend is built, not when this module is.
"""

from __future__ import annotations

from typing import Any

from codedpo.components.llm.base import (
    Backend,
    BackendError,
    Completion,
    FinishReason,
    SamplingParams,
    cut_at_stop,
    derive_seed,
)
from codedpo.components.llm.prompts import Prompt


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
