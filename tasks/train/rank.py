"""One rank of a distributed fit: ``python -m tasks.train.rank SPEC_DIR``, as ``tasks.train.launch`` starts it.

Lightning's DDP launcher starts the other ranks by running this same command again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tasks.host import exit_with_parent
from tasks.train.launch import EPOCH_LINE, OUTCOME
from tasks.train.trained import EpochRecord


def main(spec_dir: Path) -> None:
    """One rank: fit the module ``fit_in_processes`` left in ``spec_dir``; rank 0 reports epochs and the outcome."""
    exit_with_parent()  # before the imports, which take seconds: a launcher killed meanwhile leaves no rank
    import lightning as L
    import torch
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from tasks.data.snapshot import DatasetSnapshot
    from tasks.train.config import TrainConfig
    from tasks.train.fit import fit_module

    spec = json.loads((spec_dir / "spec.json").read_text())
    config = TrainConfig.model_validate(spec["config"])
    L.seed_everything(config.seed, workers=True, verbose=False)
    # Written by the parent for this fit, in the fit's own folder: the module, architecture and all.
    module = torch.load(spec_dir / "module.pt", weights_only=False)

    def report(record: EpochRecord) -> None:
        if rank_zero_only.rank == 0:
            print(EPOCH_LINE + record.model_dump_json(), flush=True)

    outcome = fit_module(
        module, DatasetSnapshot.model_validate(spec["snapshot"]), config, Path(spec["out_dir"]), report,
        Path(spec["resume"]) if spec["resume"] else None,
    )
    if rank_zero_only.rank == 0:
        tmp = spec_dir / (OUTCOME + ".tmp")
        tmp.write_text(outcome.model_dump_json())
        os.replace(tmp, spec_dir / OUTCOME)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
