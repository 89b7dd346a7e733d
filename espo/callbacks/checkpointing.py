"""``RunCheckpoint``: the checkpoints every ``espo fit`` writes, for exact resumption.

A ``ModelCheckpoint`` that saves every N optimiser steps (``trainer.global_step``; μ per rollout step) and,
when the run dies of an exception (Ctrl-C included), once more as ``on_exception.ckpt``. A checkpoint holds
the policy's weights, the optimiser and scheduler state, Lightning's loop counters, the prompt loader's
position (``espo.tasks.loader``) and espo's own counters (``rollout_step``, which keys every random stream).
``espo fit --config ... --ckpt_path <dir>/last.ckpt`` then continues exactly where the run stood.

The EspoCLI adds one as ``--checkpoint.*``; ``trainer.enable_checkpointing: false`` or
``--checkpoint.every_n_train_steps 0`` turns the periodic saves off.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

# Lightning warns that manual optimisation checkpoints hold the state after the optimiser step. For espo that
# is the point: a checkpoint falls between two rollout steps, which is where a resumed run starts.
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization", category=Warning)
# A resumed run logs into a new version folder by design (docs/robustness.md), so its checkpoint directory
# always differs from the one it resumes from; Lightning's warning about that says nothing to act on.
warnings.filterwarnings("ignore", message=r"The dirpath has changed from", category=Warning)
# Resuming with checkpointing turned off leaves this callback's saved state unused, which is harmless.
warnings.filterwarnings("ignore", message=r".*Please add the following callbacks: \['RunCheckpoint'\]",
                        category=Warning)


class RunCheckpoint(ModelCheckpoint):
    """Periodic checkpoints for exact resumption, plus one when the run fails.

    Args:
        dirpath: Directory of the checkpoints; None: ``checkpoints/`` in the run's log directory.
        filename: File name pattern of the periodic checkpoints (Lightning's ``{epoch}``/``{step}`` fields).
        every_n_train_steps: Save every this many optimiser steps (0: no periodic saves).
        save_top_k: Periodic checkpoints to keep, newest first (-1: all of them).
        save_last: Also provide ``last.ckpt``: ``"link"`` is a symlink to the newest checkpoint (no second
            copy), ``true`` a copy, ``false`` none.
        save_on_exception: When training raises (Ctrl-C too), save ``on_exception.ckpt`` with the state at
            that moment, which may be part-way through a rollout step (see docs/robustness.md).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "{step}",
        every_n_train_steps: int = 100,
        save_top_k: int = 1,
        save_last: bool | Literal["link"] = "link",
        save_on_exception: bool = True,
    ) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}.")
        super().__init__(dirpath=dirpath, filename=filename, every_n_train_steps=every_n_train_steps,
                         save_top_k=save_top_k if every_n_train_steps else 0,
                         save_last=save_last if every_n_train_steps else False)
        self.save_on_exception = save_on_exception
        self._saved_on_sigterm = False

    @property
    def state_key(self) -> str:
        # Distinct from a user's own ModelCheckpoint (whose key is "ModelCheckpoint{...}"), so both restore their
        # state; and the same whatever the checkpoint settings, so a run resumed with other --checkpoint.* values
        # is not told to "add the following callbacks".
        return "RunCheckpoint"

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # A SIGTERM (pre-emption notice) makes Lightning stop after this step, or after the epoch if this was its
        # last batch; a checkpoint saved then is one Lightning's loops do not resume correctly. Save here, where
        # the periodic checkpoints are saved. Single process only: with several, Lightning's own SIGTERM
        # handling stops every rank at the next batch, and on_exception saves there.
        if (self.save_on_exception and getattr(trainer, "received_sigterm", False) and trainer.world_size == 1
                and not self._saved_on_sigterm):
            self._saved_on_sigterm = self._save_on_exception(trainer, "SIGTERM")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and self._saved_on_sigterm:
            return
        self._save_on_exception(trainer, type(exception).__name__)

    def _save_on_exception(self, trainer: Trainer, reason: str) -> bool:
        if not self.save_on_exception or self.dirpath is None or trainer.global_step == 0:
            return False
        path = os.path.join(self.dirpath, "on_exception.ckpt")
        try:
            trainer.save_checkpoint(path)
        except Exception as err:  # noqa: BLE001 - the original exception is the one to report
            rank_zero_warn(f"espo: could not save {path} after {reason}: {err}")
            return False
        rank_zero_info(f"espo: {reason} at optimiser step {trainer.global_step}; saved {path}")
        return True
