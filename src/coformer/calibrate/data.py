"""The calibration split as a ``LightningDataModule``: fixed, length-bucketed batches.

Texts are sorted by token length before they are cut into batches, so a batch pads to a length
its texts actually have (the embedded corpus mixes 15-token summaries with 100+-token bodies);
the batch order is shuffled. Every stage sees its own order (seeded by the run seed and the
stage number), so consecutive stages do not start on the same batches.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from coformer.calibrate.targets import BATCH_INDEX
from coformer.data import text_batches
from coformer.data.prepared import Prepared
from coformer.errors import DataError

Batch = dict[str, torch.Tensor]


class Batches(Dataset):
    """A list of ready batches in a stage-specific order; one item is one batch."""

    def __init__(self, batches: list[Batch], seed: int):
        self.batches = batches
        self.order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed)).tolist()

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        j = self.order[i]
        return self.batches[j] | {BATCH_INDEX: torch.tensor(j)}  # the index keys the teacher cache


class CalibrationData(L.LightningDataModule):
    def __init__(self, batches: list[Batch], seed: int = 0):
        super().__init__()
        if not batches:
            raise DataError("no calibration batches; check the data source and its calibration split")
        self.batches = batches
        self.seed = seed
        self.stage = 0  # set by the runner before each stage's fit

    @classmethod
    def from_texts(
        cls, tokenizer, texts: list[str], batch_size: int, max_length: int, seed: int = 0, labels: list[int] | None = None
    ) -> CalibrationData:
        """Tokenise ``texts`` into length-bucketed batches; ``labels`` (one class id per text) enable the task loss."""
        if labels is not None and len(labels) != len(texts):
            raise DataError(f"{len(labels)} labels for {len(texts)} texts; give one label per text")
        lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
        batches = text_batches(tokenizer, [texts[i] for i in order], batch_size, max_length)
        if labels is not None:
            for b, start in zip(batches, range(0, len(texts), batch_size)):
                b["labels"] = torch.tensor([labels[i] for i in order[start : start + batch_size]])
        return cls(batches, seed)

    @classmethod
    def from_prepared(cls, prepared: Prepared, processor, batch_size: int, max_length: int, seed: int = 0) -> CalibrationData:
        """The prepare stage's calibration split: length-bucketed text batches, or image batches in
        order; with their labels where the data has them (the task loss uses them)."""
        if prepared.kind == "tokens":
            return cls.from_texts(processor, prepared.splits["calibration"], batch_size, max_length, seed, prepared.labels.get("calibration"))
        return cls(prepared.batches(processor, "calibration", batch_size, max_length), seed)

    def sample(self, texts: int) -> list[Batch]:
        """About ``texts`` inputs in whole batches, spread evenly over the length-sorted batches."""
        total = sum(len(next(iter(b.values()))) for b in self.batches)
        return self.batches[:: max(1, round(total / texts))]

    def train_dataloader(self) -> DataLoader:
        seed = self.seed * 1000 + self.stage
        return DataLoader(
            Batches(self.batches, seed), batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(seed)
        )
