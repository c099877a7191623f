"""The model client: what every stage that asks a model for text stands on (tasks writes task
prompts with it, sample samples codes and tests, evaluate samples benchmark solutions).

    base.py     the `Backend` interface, `SamplingParams`, `Completion`, seeds
    prompts.py  prompt templates (`PromptTemplates`, `TemplateError`)
    hf.py       transformers generation, CPU or GPU
    openai.py   any server with OpenAI's completions / chat API (vLLM's server, TGI, ...)
    vllm.py     vLLM's offline engine (GPU pods)
    factory.py  the backend and templates a run's `sampling` section names

It imports no stage (only `components/common`).
"""
