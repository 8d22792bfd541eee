"""The ``jepalab`` command line.

jepalab train [key=value ...]      pretrain (Hydra; default: I-JEPA on the embedded digits)
jepalab train experiment=NAME      a recipe from configs/experiment/
jepalab train -m key=a,b           a Hydra multirun sweep
jepalab list                       registered encoders, predictors, datasets, experiments
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

USAGE = __doc__


def _train(overrides: Sequence[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from jepalab.config import config_dir, register_configs
    from jepalab.experiment import train

    register_configs()

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        if cfg.run_dir is None:
            cfg.run_dir = HydraConfig.get().runtime.output_dir
        train(cfg)

    argv = sys.argv
    sys.argv = ["jepalab", *overrides]
    try:
        _main()
    finally:
        sys.argv = argv
    return 0


def _list() -> int:
    from jepalab.config import config_dir
    from jepalab.data import list_datasets
    from jepalab.models import list_encoders, list_predictors

    experiments = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
    for title, names in (
        ("encoders", list_encoders()),
        ("predictors", list_predictors()),
        ("datasets", list_datasets()),
        ("experiments", experiments),
    ):
        print(f"{title}: {', '.join(names)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "train":
        return _train(rest)
    if command == "list":
        return _list()
    print(f"jepalab: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
