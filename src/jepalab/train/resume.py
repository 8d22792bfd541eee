"""Resuming into an existing run directory without damaging it.

A run directory describes one model trained by one sequence of settings. Before anything
is written, a resume is checked against the newest readable checkpoint:

* the models must be the same (their recorded constructor calls, :mod:`jepalab.specs`):
  otherwise the resume is refused, listing the differing arguments;
* other settings (learning rate, batch size, ...) may change: the change is appended to
  ``config_history.jsonl`` with the step it takes effect at, and ``config.json`` keeps
  describing the run as it was started;
* checkpoints that exist but none of which loads are not silently ignored: the run would
  restart from step 0 and overwrite ``metrics.jsonl``, so that needs ``trainer.resume=false``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jepalab.checkpoint import list_checkpoints, load_newest
from jepalab.errors import CheckpointError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` of every leaf that differs (missing leaves are ``None``)."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


# Settings that only say where a run goes or how it is displayed: never a change of the run.
_NOT_SETTINGS = ("run_dir", "trainer.progress", "trainer.resume", "trainer.wandb.")


def architecture_changes(
    stored: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    weights: Mapping[str, Any] | None = None,
) -> list[str]:
    """``"path.argument: old -> new"`` for every argument that differs between the
    checkpoint's recorded models (``state["models"]``) and the current ones.

    Only modules that hold weights (a key of ``weights``, the checkpoint's state dict, under
    their path) and the method's class count: the method's own settings (EMA schedule,
    loss) may change on resume like any other setting.
    """
    if not stored:
        return []
    changes = []
    old_root, new_root = stored.get("", {}), current.get("", {})
    if old_root.get("class") != new_root.get("class"):
        changes.append(f"method: {old_root.get('class')!r} -> {new_root.get('class')!r}")
    keys = list(weights or ())
    for path in sorted((stored.keys() | current.keys()) - {""}):
        if weights is not None and not any(k.startswith(f"{path}.") for k in keys):
            continue
        old, new = stored.get(path), current.get(path)
        if old is None or new is None:
            changes.append(
                f"{path}: {'absent' if old is None else 'present'} -> "
                f"{'absent' if new is None else 'present'}"
            )
            continue
        diff = differences(
            {"class": old["class"], **old["kwargs"]}, {"class": new["class"], **new["kwargs"]}
        )
        changes += [
            f"{path}.{key}: {a!r} -> {b!r}"
            for key, (a, b) in diff.items()
            if key not in _RUNTIME_ARGUMENTS
        ]
    return changes


# Constructor arguments that change how a model runs, not what its weights mean.
_RUNTIME_ARGUMENTS = ("attn_backend", "drop_path_rate", "channels_last")


def newest_state(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads (:func:`~jepalab.checkpoint.load_newest`),
    ``None`` if there is none; raises if checkpoints exist and every one is damaged."""
    if not list_checkpoints(ckpt_dir):
        return None
    try:
        return load_newest(ckpt_dir)[1]
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}; resuming would restart from step 0 and overwrite the run's metrics. "
            "Restart on purpose with trainer.resume=false, or use a new run_dir"
        ) from None


def check_resume(state: Mapping[str, Any], models: Mapping[str, Any], where: Path | str) -> None:
    """Refuse to resume ``state`` into different models (lists what differs)."""
    changes = architecture_changes(state.get("models"), models, state.get("model"))
    if changes:
        raise CheckpointError(
            f"{where} holds a different model (step {state.get('step')}); refusing to resume "
            f"into it: {'; '.join(changes[:8])}"
            + (f" (+{len(changes) - 8} more)" if len(changes) > 8 else "")
            + ". Use a new run_dir (or name=...), or the run's own settings"
        )


def accept_run(
    run_dir: Path, config: Mapping[str, Any], resume_state: Mapping[str, Any] | None
) -> int:
    """Before anything is written, with the checkpoint the run resumes from (``None``: a
    new run; the Trainer's :meth:`~jepalab.train.trainer.Trainer.resume_state`, which has
    already refused a different model or only damaged checkpoints): write ``config.json``
    and ``.hydra/`` (a new run) or append the changed settings to ``config_history.jsonl``
    (a resumed one). Returns the step the run starts from."""
    step = 0 if resume_state is None else int(resume_state["step"])
    changes = record_config(run_dir, config, step)
    if step == 0:
        write_hydra_record(run_dir, config)
    if changes:
        log.warning(
            "resuming %s at step %d with changed settings (recorded in %s): %s",
            run_dir,
            step,
            HISTORY_FILE,
            ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()),
        )
    return step


def record_config(run_dir: Path, config: Mapping[str, Any], step: int) -> dict[str, Any]:
    """Write ``config.json`` for a new run; for a resumed one, keep it and append the
    changed settings (if any) to ``config_history.jsonl``. Returns the changes."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if step == 0 or not path.is_file():
        path.write_text(json.dumps(config, indent=2))
        return {}
    current = json.loads(path.read_text())
    for line in _history(run_dir):  # the settings in force: the original plus every change
        for key, (_, new) in line["changes"].items():
            _set(current, key, new)
    diff = {
        k: v
        for k, v in differences(current, config).items()
        if not k.startswith(_NOT_SETTINGS) and k not in _NOT_SETTINGS
    }
    if diff:
        entry = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": diff}
        with open(run_dir / HISTORY_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
    return diff


def write_hydra_record(run_dir: Path, config: Mapping[str, Any]) -> None:
    """Hydra's own record of a command (``.hydra/config.yaml``, ``hydra.yaml``,
    ``overrides.yaml``), written into a new run directory once it has accepted the run
    (configs/config.yaml turns off Hydra's writing at start-up). Outside Hydra: nothing."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    folder = Path(run_dir) / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(dict(config)))
    (folder / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra_cfg}))
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(list(hydra_cfg.overrides.task)))


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


__all__ = [
    "CONFIG_FILE",
    "accept_run",
    "HISTORY_FILE",
    "architecture_changes",
    "check_resume",
    "differences",
    "newest_state",
    "record_config",
    "write_hydra_record",
]
