"""Which Dagster executor runs the steps: this machine's processes (default) or Kubernetes pods (dagster-k8s).

A deployment matter, not a recipe one (the recipe says what to build; where the steps run must not change any
code_version), so the environment of the code location selects it:

- PLASMA_DAGSTER_EXECUTOR=multiprocess (default, Dagster's own default): every step a process on this machine.
- PLASMA_DAGSTER_EXECUTOR=k8s: dagster_k8s.k8s_job_executor, every step a Kubernetes Job. Under the Helm chart's
  K8sRunLauncher (deploy/helm/values.yaml) the step pods inherit the run pod's image, env and volumes.
  PLASMA_K8S_EXECUTOR_CONFIG may name a YAML file of that executor's config (deploy/k8s/executor.yaml: the
  training steps' GPU request and node placement, how many step pods at once), fixed for every run.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml

EXECUTOR_ENV = "PLASMA_DAGSTER_EXECUTOR"
K8S_CONFIG_ENV = "PLASMA_K8S_EXECUTOR_CONFIG"
EXECUTORS = ("multiprocess", "k8s")


def executor_from_env(environ: dict[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor the environment asks for; None means Dagster's default (multiprocess)."""
    env = os.environ if environ is None else environ
    kind = env.get(EXECUTOR_ENV, "").strip() or "multiprocess"
    if kind not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={kind!r}: expected one of {', '.join(EXECUTORS)}")
    if kind == "multiprocess":
        if env.get(K8S_CONFIG_ENV):
            raise ValueError(f"{K8S_CONFIG_ENV} is set but {EXECUTOR_ENV} is not k8s")
        return None
    from dagster_k8s import k8s_job_executor

    config_file = env.get(K8S_CONFIG_ENV, "").strip()
    if not config_file:
        return k8s_job_executor
    return k8s_job_executor.configured(load_k8s_executor_config(Path(config_file)), name="k8s")


def load_k8s_executor_config(path: Path) -> dict:
    """The executor config in `path`, checked against k8s_job_executor's schema (errors name the file)."""
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    if not path.exists():
        raise FileNotFoundError(f"{K8S_CONFIG_ENV}: {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    result = process_config(k8s_job_executor.config_schema.config_type, config)
    if not result.success:
        problems = "; ".join(err.message for err in result.errors)
        raise ValueError(f"{path}: not a k8s_job_executor config: {problems}")
    return config


def with_executor(defs: dg.Definitions, environ: dict[str, str] | None = None) -> dg.Definitions:
    """`defs` running its jobs on the executor the environment selects (unchanged for the default)."""
    executor = executor_from_env(environ)
    if executor is None:
        return defs
    return dg.Definitions.merge(defs, dg.Definitions(executor=executor))
