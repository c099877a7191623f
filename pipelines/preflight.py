"""Checks run before any sampling step starts, so that what would fail every shard fails once,
in one line, before a GPU is reserved or a pipeline task is scheduled:

- every prompt template (task writing, code, tests, system) has its placeholders;
- the model can be found: a local folder or a model in the Hugging Face cache (`hf`), the
  package itself (`vllm`), or, for `openai`, an endpoint that answers and serves that model.

The steps would raise the same errors later; the checks only move them to the front.
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.error
import urllib.request

from codedpo.components.common.config import RunConfig, SamplingConfig
from codedpo.components.llm.base import BackendError
from codedpo.components.llm.factory import make_templates
from codedpo.components.llm.openai import EndpointUnreachableError, ModelNotFoundError, RequestRejectedError
from codedpo.components.tasks.writing import task_template

PROBE_TIMEOUT_S = 10.0


def check_sampling_setup(config: RunConfig) -> None:
    """Raise TemplateError or BackendError (one line naming the setting) when the run's
    templates or model cannot work; a no-op for the `replay` backend."""
    sampling = config.sampling
    if sampling.backend == "replay":
        return
    task_template(sampling.style, config.tasks.template)
    make_templates(sampling)
    if sampling.backend == "hf":
        _check_hf_model(sampling)
    elif sampling.backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise BackendError(
                "sampling.backend 'vllm': the vllm package is not installed here (it runs in the sampler "
                "image on a GPU node); use 'hf' or 'openai' on this machine"
            )
    elif sampling.backend == "openai":
        probe_openai_endpoint(sampling)


def _check_hf_model(sampling: SamplingConfig) -> None:
    from transformers import AutoConfig

    try:  # the config alone: cheap, and it fails the same way a full load would
        AutoConfig.from_pretrained(sampling.model, local_files_only=True)
    except (OSError, ValueError) as error:
        where = "not a model folder" if os.path.isdir(str(sampling.model)) else "no such folder or cached model"
        raise BackendError(
            f"sampling.model {sampling.model!r}: cannot load it ({where}; a Hugging Face id must already "
            f"be in the local cache): {str(error).splitlines()[0][:160]}"
        ) from None


def probe_openai_endpoint(sampling: SamplingConfig) -> None:
    """GET `<base_url>/models`: the server must answer, accept the key, and list the model
    (a server without that route is given the benefit of the doubt)."""
    base_url = str(sampling.base_url).rstrip("/")
    request = urllib.request.Request(f"{base_url}/models", headers={"Accept": "application/json"})
    key = os.environ.get(sampling.api_key_env)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise RequestRejectedError(
                f"sampling.base_url {base_url}: the server refused the API key (HTTP {error.code}; "
                f"set it in ${sampling.api_key_env})"
            ) from None
        return  # no /models route (or a server error the sampling retries will meet): not decisive
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise EndpointUnreachableError(f"sampling.base_url {base_url}: cannot connect ({reason})") from None
    try:
        served = [str(item["id"]) for item in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        return
    if sampling.model not in served:
        shown = ", ".join(served[:5]) or "none"
        raise ModelNotFoundError(f"sampling.model {sampling.model!r}: not served by {base_url} (it serves: {shown})")


def cluster_sandbox_problem(config: RunConfig) -> str | None:
    """Why `config` cannot run its candidates on a cluster, or None. On a cluster the execute and
    time steps run in plain pods of the light image: no `runsc`, and no privileges to start it. So
    the inline launcher works there only with `sandbox: pod` (a node pool whose default runtime
    is gVisor); otherwise the candidates must go to the gVisor Job (`launcher: kubernetes-job`)."""
    execute = config.execute
    if execute.launcher == "inline" and execute.sandbox == "runsc":
        return ("execute.launcher is 'inline' with sandbox 'runsc', but on a cluster the execute and time steps run in "
                "pods without runsc: set execute.launcher: kubernetes-job (and execute.job.image, execute.job.store_uri)")
    if execute.launcher == "docker":
        return ("execute.launcher is 'docker', which runs the sandbox pods on one machine's Docker engine (the "
                "rehearsal, codedpo run --runner docker): on a cluster set execute.launcher: kubernetes-job")
    return None
