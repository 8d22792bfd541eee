"""``jepalab train``: pretrain as configured, then probe the frozen encoder.

``train(cfg)`` is what the command runs once Hydra has composed the configuration; from
Python, ``train(compose_config([...], experiment=...))`` runs the same.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from jepalab.cli.validate import validate_config
from jepalab.config import Config, to_plain
from jepalab.data.build import unset_probe_keys
from jepalab.eval.after_training import PROBES, probe
from jepalab.eval.protocol import format_table
from jepalab.methods.build import build_experiment
from jepalab.runs import load_run
from jepalab.train.resume import accept_run
from jepalab.train.setup import build_trainer, run_dir_of

log = logging.getLogger(__name__)


def train(cfg: Config) -> dict[str, Any]:
    """Pretrain as configured, then (``eval.probe``) probe the frozen encoder.

    Returns a summary with the final loss and the probe table.
    """
    validate_config(cfg)  # counts, ranges and names, each error naming its key
    if cfg.eval.probe not in PROBES:
        raise ValueError(f"eval.probe={cfg.eval.probe!r} is not one of {PROBES}")
    unset = unset_probe_keys(cfg.data) if cfg.eval.probe != "none" else []
    if unset:  # said before training, not after it; the command still trains as typed
        log.warning(
            "no probe after training: %s %s not set (e.g. jepalab train %s=/path/to/labelled/"
            "data); eval.probe=none silences this",
            ", ".join(unset),
            "is" if len(unset) == 1 else "are",
            unset[0],
        )
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    exp = build_experiment(cfg)  # may fill in cfg (the pretrained encoder's configuration)
    resolved = to_plain(cfg)
    trainer = build_trainer(cfg, exp, resolved)  # joins the process group of a launcher
    try:
        if trainer.dist.is_main:
            accept_run(run_dir, resolved, trainer.resume_state())
            log.info(
                "run %s: %d steps (%d per epoch) of %d samples (%d process(es) x %d "
                "accumulation step(s) x %d), %.1fM trainable parameters, device %s",
                run_dir,
                trainer.last_step,
                trainer.steps_per_epoch,
                trainer.batch_size,
                trainer.dist.world_size,
                trainer.accum_steps,
                trainer.micro_batch_size,
                sum(p.numel() for p in exp.method.parameters() if p.requires_grad) / 1e6,
                trainer.device,
            )
        losses = trainer.fit()
    finally:
        trainer.close()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "step": trainer.step}
    if losses:
        summary["final_loss"] = losses[-1]
    if not trainer.dist.is_main:  # one process probes and writes the results
        return summary
    encoder = exp.method.eval_encoder
    if trainer.sharded:  # the trained modules hold shards; probe the full checkpoint
        encoder = load_run(run_dir, trainer.device).method.eval_encoder
    if cfg.eval.probe != "none" and cfg.data.probe is not None and not unset:
        results, splits = probe(cfg, encoder, trainer.device)
        table = format_table(results)
        kind = "Linear probe" if cfg.eval.probe == "linear" else "Attentive probe"
        print(f"\n{kind} on frozen features (held-out split):\n" + table, flush=True)
        summary["probe"] = {k: v.to_dict() for k, v in results.items()}
        summary["probe_splits"] = splits
        report = {**summary["probe"], "splits": splits}
        (run_dir / "probe.json").write_text(json.dumps(report, indent=2))
    return summary


def main(overrides: Sequence[str]) -> int:
    """``jepalab train [key=value ...]``: Hydra composes the config, makes the run directory
    (``.hydra/``) and runs sweeps; errors come back to :func:`jepalab.cli.dispatch.main` to
    report as one line, instead of Hydra's own report."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from jepalab.config import config_dir, register_configs

    register_configs()
    failed: list[Exception] = []

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            validate_config(cfg)
            if cfg.run_dir is None:
                cfg.run_dir = HydraConfig.get().runtime.output_dir
            train(cfg)
        except Exception as exc:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # the launcher (maybe a SLURM job) must see the job fail
            failed.append(exc)  # Hydra would print its own report and exit with 1

    argv, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["jepalab", *overrides]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors: raised, not printed + exit(1)
    try:
        _main()
    finally:
        sys.argv = argv
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    if failed:
        raise failed[0]
    return 0


__all__ = ["main", "train"]
