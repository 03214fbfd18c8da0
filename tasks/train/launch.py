"""A distributed fit (Lightning DDP, ``devices`` > 1 or ``num_nodes`` > 1) in processes of its own, as torchrun runs one.

Lightning's DDP launcher starts the other ranks by running the current command again. Inside a
flow that command is the whole build (or a test session), so a distributed fit runs as
``python -m tasks.train.rank SPEC_DIR`` instead: that process is rank 0, and Lightning starts
the other ranks with the same command. What to fit travels in the fit's own folder: the module
(pickled by this process for its child, never read from anywhere else), the snapshot and the
settings. Rank 0 prints each epoch's record as it ends, so progress shows in the flow's log, and
leaves the outcome beside them; the caller loads the best weights from its checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.errors import LeptonError

if TYPE_CHECKING:
    from tasks.data.snapshot import DatasetSnapshot
    from tasks.train.config import TrainConfig
    from tasks.train.module import ClassifierModule
    from tasks.train.trained import EpochRecord, FitOutcome

# Set in the launched processes: there, a fit runs in-process (Lightning's own DDP).
CHILD = "LEPTON_FIT_PROCESS"
EPOCH_LINE = "lepton-epoch "
OUTCOME = "outcome.json"


class DistributedFitFailed(LeptonError):
    """A distributed fit's processes failed; the message holds the end of their output."""


def runs_in_processes(config: TrainConfig) -> bool:
    """Whether ``config`` asks for more than one training process (and this is not already one of them)."""
    # "auto" or -1 on an accelerator means every device there is; on CPUs Lightning takes one.
    every = config.devices == -1 or (config.devices == "auto" and config.accelerator != "cpu")
    many = every or (isinstance(config.devices, int) and config.devices > 1) or config.num_nodes > 1
    # Explicit spawn/fork strategies start their own processes from this one; leave those to Lightning.
    return many and config.strategy in ("auto", "ddp") and not os.environ.get(CHILD)


def fit_in_processes(
    module: ClassifierModule,
    snapshot: DatasetSnapshot,
    config: TrainConfig,
    out_dir: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    resume: Path | None = None,
) -> FitOutcome:
    """Fit ``module`` with Lightning DDP in launched processes; ``module`` ends up holding the best weights.

    Raises:
        DistributedFitFailed: a rank failed; the message has the end of the processes' output.
    """
    import torch

    from tasks.train.trained import EpochRecord, FitOutcome

    spec_dir = out_dir / "launch"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / OUTCOME).unlink(missing_ok=True)
    torch.save(module, spec_dir / "module.pt")
    spec = {
        "snapshot": snapshot.model_dump(mode="json"), "config": config.model_dump(mode="json"), "out_dir": str(out_dir),
        "resume": str(resume) if resume else None,
    }
    (spec_dir / "spec.json").write_text(json.dumps(spec))
    tail: deque[str] = deque(maxlen=60)
    process = subprocess.Popen(
        [sys.executable, "-m", "tasks.train.rank", str(spec_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env={**os.environ, CHILD: "1"},
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(EPOCH_LINE):
                if on_epoch:
                    on_epoch(EpochRecord.model_validate_json(line[len(EPOCH_LINE):]))
            else:
                tail.append(line.rstrip())
        code = process.wait()
    finally:
        if process.poll() is None:  # this process is stopping: the ranks stop with it
            process.kill()
            process.wait()
    if code != 0 or not (spec_dir / OUTCOME).is_file():
        raise DistributedFitFailed(
            f"the distributed fit ({config.num_nodes} node(s) x {config.devices} devices, {config.strategy}) failed with "
            f"exit code {code}; its last output:\n" + "\n".join(tail)
        )
    outcome = FitOutcome.model_validate_json((spec_dir / OUTCOME).read_text())
    best = torch.load(outcome.checkpoint_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    return outcome
