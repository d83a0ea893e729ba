"""Dagster on a cluster (dagster-k8s): the code location runs its steps on k8s_job_executor when its environment
says so, the shipped deployment files are valid for Dagster's own schemas and agree with each other and with the
definitions, and the pid-based dead-run reaper stands aside under a launcher that watches its own workers."""

from __future__ import annotations

import runpy
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.instance.config import dagster_instance_config_schema

from plasma_pipeline.defs.cluster import EXECUTOR_ENV, K8S_CONFIG_ENV, executor_from_env, load_k8s_executor_config
from plasma_pipeline.defs.runs import reap_dead_runs
from plasma_pipeline.recipe import REPO_ROOT, load_recipe

dagster_k8s = pytest.importorskip("dagster_k8s")

DEPLOY = REPO_ROOT / "deploy"
EXECUTOR_YAML = DEPLOY / "k8s" / "executor.yaml"
IMAGE_ROOT = Path("/opt/plasma")  # where deploy/Dockerfile puts the repository


def _code_location(monkeypatch, tiny_recipe: Path, **env: str) -> dg.Definitions:
    """plasma_pipeline.definitions executed afresh, as a code server would import it, under `env`."""
    monkeypatch.setenv("PLASMA_RECIPE", str(tiny_recipe))
    for name in (EXECUTOR_ENV, K8S_CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_module("plasma_pipeline.definitions")["defs"]


def _gpu_steps(defs: dg.Definitions) -> set[str]:
    """Step keys of the assets in the "gpu" pool (the trainers)."""
    job = defs.resolve_implicit_global_asset_job_def()
    return {name for name in job.graph.node_names() if job.graph.node_named(name).definition.pool == "gpu"}


def test_the_code_location_runs_steps_as_k8s_jobs_when_its_environment_says_so(monkeypatch, tiny_recipe):
    local = _code_location(monkeypatch, tiny_recipe)
    assert local.resolve_job_def("everything").executor_def is dg.multi_or_in_process_executor  # Dagster's default

    defs = _code_location(monkeypatch, tiny_recipe, **{EXECUTOR_ENV: "k8s", K8S_CONFIG_ENV: str(EXECUTOR_YAML)})
    k8s_fn = dagster_k8s.k8s_job_executor.executor_creation_fn
    for job in ("everything", "data_job", "verify_store"):
        executor = defs.resolve_job_def(job).executor_def
        assert executor.name == "k8s" and executor.executor_creation_fn is k8s_fn, job
    assert defs.resolve_implicit_global_asset_job_def().executor_def.executor_creation_fn is k8s_fn

    # The shipped executor config gives the GPU to exactly the training steps of these definitions.
    per_step = load_k8s_executor_config(EXECUTOR_YAML)["per_step_k8s_config"]
    assert set(per_step) == _gpu_steps(defs) == {"base_model", "chat_model"}
    for step in per_step.values():
        assert step["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"

    # Without a config file the executor takes its config per run, validated against dagster-k8s's schema.
    bare = _code_location(monkeypatch, tiny_recipe, **{EXECUTOR_ENV: "k8s"})
    job = bare.resolve_job_def("everything")
    assert job.executor_def is dagster_k8s.k8s_job_executor
    good = {"execution": {"config": {"job_namespace": "plasma", "max_concurrent": 4,
                                     "per_step_k8s_config": {"base_model": {"container_config": {
                                         "resources": {"limits": {"nvidia.com/gpu": "1"}}}}}}}}
    assert dg.validate_run_config(job, good)
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurrent"):
        dg.validate_run_config(job, {"execution": {"config": {"max_concurrent": "many"}}})


def test_a_wrong_executor_setting_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=f"{EXECUTOR_ENV}='celery': expected one of multiprocess, k8s"):
        executor_from_env({EXECUTOR_ENV: "celery"})
    with pytest.raises(ValueError, match=f"{K8S_CONFIG_ENV} is set but {EXECUTOR_ENV} is not k8s"):
        executor_from_env({K8S_CONFIG_ENV: str(EXECUTOR_YAML)})
    bad = tmp_path / "executor.yaml"
    bad.write_text("max_concurent: 4\n")  # misspelt
    with pytest.raises(ValueError, match=rf"{bad}: not a k8s_job_executor config: .*max_concurent"):
        executor_from_env({EXECUTOR_ENV: "k8s", K8S_CONFIG_ENV: str(bad)})


def test_the_deployment_files_are_valid_and_agree(monkeypatch, offline_sources):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused")
    instance_yaml = yaml.safe_load((DEPLOY / "k8s" / "dagster.yaml").read_text())
    result = process_config(dagster_instance_config_schema(), instance_yaml)
    assert result.success, [e.message for e in result.errors]
    launcher = instance_yaml["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = process_config(dagster_k8s.K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, [e.message for e in result.errors]
    coordinator = instance_yaml["run_coordinator"]
    assert getattr(__import__(coordinator["module"], fromlist=["_"]), coordinator["class"])

    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "plasma_pipeline.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    helm_env = {e["name"]: e["value"] for e in deployment["env"]}
    # The run pods get the same env from either file: the chart's (includeConfigInLaunchedRuns) or dagster.yaml.
    assert helm_env == dict(v.split("=", 1) for v in launcher["config"]["env_vars"])
    assert helm_env[EXECUTOR_ENV] == "k8s"
    for var in ("PLASMA_RECIPE", K8S_CONFIG_ENV):  # paths inside the image name files of this repository
        assert (REPO_ROOT / Path(helm_env[var]).relative_to(IMAGE_ROOT)).is_file(), var
    # The shared volume is mounted where the recipe keeps its store, in the chart's pods and in dagster.yaml's.
    recipe = load_recipe(REPO_ROOT / Path(helm_env["PLASMA_RECIPE"]).relative_to(IMAGE_ROOT), check_paths=False)
    store_in_image = str(IMAGE_ROOT / recipe.store.root)
    assert [m["mountPath"] for m in deployment["volumeMounts"]] == [store_in_image]
    assert [m["mountPath"] for m in launcher["config"]["volume_mounts"]] == [store_in_image]
    # One trainer at a time: the gpu pool of the local instance holds in the cluster's too.
    assert values["concurrency"]["pools"] == {"granularity": "op", "defaultLimit": 1}
    assert instance_yaml["concurrency"]["pools"] == {"granularity": "op", "default_limit": 1}


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: unused}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_the_pid_reaper_stands_aside_when_the_launcher_watches_its_own_workers(tmp_path):
    """Under K8sRunLauncher the pids in a run's events belong to pods, so a run whose pid is not a process here is
    not dead; under the default launcher the same run is reaped."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid now names no process of this host
    (tmp_path / "home").mkdir()
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    k8s = {"run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
        "service_account_name": "dagster", "instance_config_map": "dagster-instance", "dagster_home": str(tmp_path),
        "load_incluster_config": False, "kubeconfig_file": str(tmp_path / "kubeconfig"), "job_namespace": "plasma"}}}

    @dg.op
    def noop():
        return None

    job = dg.GraphDefinition(name="hog", node_defs=[noop]).to_job()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home"), overrides=k8s) as instance:
        run = instance.create_run_for_job(job)
        instance.report_dagster_event(
            DagsterEvent(DagsterEventType.RUN_START.value, job_name="hog", pid=gone.pid), run.run_id
        )
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        lines: list[str] = []
        assert reap_dead_runs(instance, log=lines.append) == []
        assert lines == ["not reaping: runs are launched by K8sRunLauncher, not as processes of this host; "
                         "Dagster's run monitoring watches them"]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        assert reap_dead_runs(instance, log=lambda _: None) == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


def test_dagster_k8s_builds_the_training_step_pod_on_the_gpu_node_and_data_steps_without_a_gpu(tmp_path):
    """The Job manifests dagster-k8s makes for two steps from the shipped files, merged in the order its step
    handler merges them: the run launcher's (deploy/k8s/dagster.yaml), the executor's step_k8s_config, then
    per_step_k8s_config by op name (deploy/k8s/executor.yaml)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    (tmp_path / "kubeconfig").write_text(KUBECONFIG)  # the launcher loads one; nothing here talks to a cluster
    config = yaml.safe_load((DEPLOY / "k8s" / "dagster.yaml").read_text())["run_launcher"]["config"]
    launcher = dagster_k8s.K8sRunLauncher(**{**config, "load_incluster_config": False, "dagster_home": "/opt/dagster",
                                             "kubeconfig_file": str(tmp_path / "kubeconfig")})
    executor = load_k8s_executor_config(EXECUTOR_YAML)

    def pod(op_name: str):
        ctx = K8sContainerContext.create_for_run(dg.DagsterRun(job_name="everything"), launcher, include_run_tags=False)
        for layer in (executor["step_k8s_config"], executor["per_step_k8s_config"].get(op_name, {})):
            ctx = ctx.merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(layer)))
        job_config = ctx.get_k8s_job_config("registry.example.com/plasma-pipeline:0.1.0", launcher)
        job = construct_dagster_k8s_job(job_config=job_config, args=["dagster", "api", "execute_step"],
                                        job_name=f"dagster-step-{op_name}", component="step_worker",
                                        user_defined_k8s_config=ctx.run_k8s_config)
        return job.spec.template.spec

    train, data = pod("base_model"), pod("deduped")
    (c_train,), (c_data,) = train.containers, data.containers
    assert c_train.resources.limits == {"nvidia.com/gpu": "1"} and train.node_selector == {"plasma/gpu": "true"}
    assert [t.key for t in train.tolerations] == ["nvidia.com/gpu"]
    assert not (c_data.resources.limits or {}) and not data.node_selector and c_data.resources.requests["cpu"] == "1"
    for spec, container in ((train, c_train), (data, c_data)):
        assert [(m.name, m.mount_path) for m in container.volume_mounts if m.name == "plasma-store"] == [
            ("plasma-store", "/opt/plasma/data/assets")]
        assert {e.name: e.value for e in container.env}[EXECUTOR_ENV] == "k8s"
