"""Per-trial training checkpoints in a folder that all workers share.

After every epoch a trial's training state is saved as ``FOLDER/STUDY/slot-N.pt``, where N is
the trial's slot (its own number, or the number of the trial a retry replaces). When a worker
dies or is stopped, the retry of its trial finds the file and continues from the last epoch
instead of the first: a trial killed at epoch 40 of 50 costs 10 epochs, not 50. Once a slot
is finished (or gave up) its file is deleted, except the best trial's (its weights are worth
keeping); a slot still owed a retry keeps it. A worker killed while it wrote a checkpoint
leaves its temporary file (``.slot-N.pt.PID.tmp``, see :func:`tuner.training.save_state`)
behind; it goes with the slot's own file once the slot is finished, best trial or not.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import optuna

from tuner.study._slots import best_trial, group_slots, slot_of
from tuner.training import TrainState, load_states, save_states

__all__ = ["Checkpoints"]

logger = logging.getLogger(__name__)

_SLOT_FILE = re.compile(r"slot-(\d+)\.pt")
_TORN_FILE = re.compile(r"\.slot-(\d+)\.pt\.\d+\.tmp")


class Checkpoints:
    """The checkpoint folder of one study."""

    def __init__(self, folder: Path, study: str) -> None:
        self.folder = folder / study

    def path(self, slot: int) -> Path:
        return self.folder / f"slot-{slot}.pt"

    def load(self, slot: int) -> list[TrainState] | None:
        """The states of the slot's runs (one, or every member of a cross-validation)."""
        return load_states(self.path(slot))

    def save(self, slot: int, states: list[TrainState]) -> None:
        save_states(states, self.path(slot))

    def sweep(self, study: optuna.Study, max_retries: int) -> list[int]:
        """Delete the files of finished slots, except the best trial's; return their slots.

        A failed trial still owed a retry (see :mod:`._slots`) is not finished: its retry
        resumes from the file. Temporary files that a killed writer left are deleted for
        every finished slot (no one writes a finished slot any more) and are not counted in
        the slots returned. Call it under the study lock.
        """
        if not self.folder.is_dir():
            return []
        trials = study.get_trials(deepcopy=False)
        done = {slot.number for slot in group_slots(trials) if slot.done(max_retries)}
        best = best_trial(trials)
        best_slot = slot_of(best) if best is not None else None
        removed = []
        for path in self.folder.iterdir():
            torn = _TORN_FILE.fullmatch(path.name)
            if torn is not None and int(torn.group(1)) in done:
                path.unlink(missing_ok=True)
                continue
            match = _SLOT_FILE.fullmatch(path.name)
            if match is None:
                continue
            slot = int(match.group(1))
            if slot in done and slot != best_slot:
                path.unlink(missing_ok=True)
                removed.append(slot)
        if removed:
            logger.debug("removed the checkpoints of finished trials %s", sorted(removed))
        return sorted(removed)
