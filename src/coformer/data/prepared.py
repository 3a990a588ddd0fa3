"""The prepare stage's folder: the data every later stage reads, materialised once.

Later stages read this folder instead of opening the source again, so a changed ``data.*``
parameter invalidates ``prepare`` and, through its outputs, exactly the stages that read them.

Layout (one folder):

* ``calibration.jsonl`` / ``evaluation.jsonl`` — one ``{"text": ...}`` per line (text models),
  with its ``"label"`` (a class id) where ``data.label_field`` names one;
* ``calibration.safetensors`` / ``evaluation.safetensors`` — one uint8 (H, W, 3) image per key,
  in order, and int64 ``labels`` where labelled (image models; safetensors, never pickle);
* ``pairs.jsonl`` — held-out ``{"module", "query", "document"}`` retrieval pairs (the builtin
  corpus has them; other sources leave it empty).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from coformer.data.batching import image_batches, text_batches, tokenize
from coformer.data.corpus import RetrievalPair, load_pairs
from coformer.data.images import load_images, load_labelled_images
from coformer.data.sources import BUILTIN, load_labelled_texts, load_texts
from coformer.errors import DataError

SPLITS = ("calibration", "evaluation")
PAIRS = "pairs.jsonl"
LABELS = "labels"  # the key of an image split's class ids in its safetensors file


@dataclass
class Prepared:
    kind: Literal["tokens", "pixels"]  # what the model takes, as ``SubModelConfig.input_kind`` says
    splits: dict[str, list]  # split -> texts, or uint8 (H, W, 3) images
    pairs: list[RetrievalPair]  # held-out retrieval pairs (empty without a retrieval task)
    labels: dict[str, list[int]] = field(default_factory=dict)  # split -> a class id per item (empty: unlabelled data)

    def files(self, folder: Path) -> list[Path]:
        suffix = ".jsonl" if self.kind == "tokens" else ".safetensors"
        return [folder / f"{split}{suffix}" for split in SPLITS] + [folder / PAIRS]

    def save(self, folder: str | Path) -> list[Path]:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = self.files(folder)
        for split, path in zip(SPLITS, paths):
            labels = self.labels.get(split)
            if self.kind == "tokens":
                write_jsonl(path, [{"text": t} | ({} if labels is None else {"label": labels[i]}) for i, t in enumerate(self.splits[split])])
            else:
                tensors = {str(i): image for i, image in enumerate(self.splits[split])}
                save_file(tensors | ({} if labels is None else {LABELS: np.asarray(labels, dtype=np.int64)}), str(path))
        write_jsonl(paths[-1], [asdict(p) for p in self.pairs])
        return paths

    @classmethod
    def load(cls, folder: str | Path) -> Prepared:
        folder = Path(folder)
        kind = "tokens" if (folder / "calibration.jsonl").is_file() else "pixels"
        if kind == "pixels" and not (folder / "calibration.safetensors").is_file():
            raise DataError(f"{folder} holds no prepared data; run the prepare stage (dvc repro prepare) or `coformer prepare`")
        splits, labels = {}, {}
        for split in SPLITS:
            if kind == "tokens":
                rows = read_jsonl(folder / f"{split}.jsonl")
                splits[split] = [row["text"] for row in rows]
                if rows and "label" in rows[0]:
                    labels[split] = [row["label"] for row in rows]
            else:
                from safetensors.numpy import load_file

                tensors = load_file(str(folder / f"{split}.safetensors"))
                if LABELS in tensors:
                    labels[split] = tensors.pop(LABELS).tolist()
                splits[split] = [tensors[str(i)] for i in range(len(tensors))]
        pairs = [RetrievalPair(**row) for row in read_jsonl(folder / PAIRS)]
        return cls(kind, splits, pairs, labels)

    def batches(
        self, processor, split: str, batch_size: int, max_length: int, limit: int | None = None, by_length: bool = False
    ) -> list[dict]:
        """Model inputs of the first ``limit`` items of ``split``: tokenised texts or processed pixels,
        with ``labels`` (B,) where the data is labelled. ``by_length`` sorts texts by length first, so
        batches pad little (the metrics do not change)."""
        items = self.splits[split][:limit]
        order = sorted(range(len(items)), key=lambda i: len(items[i])) if by_length and self.kind == "tokens" else range(len(items))
        items = [items[i] for i in order]
        batches = text_batches(processor, items, batch_size, max_length) if self.kind == "tokens" else pixel_batches(processor, items, batch_size)
        if split in self.labels:
            labels = torch.tensor([self.labels[split][i] for i in order])
            for k, batch in enumerate(batches):
                batch["labels"] = labels[k * batch_size : (k + 1) * batch_size]
        return batches

    def request(self, processor, batch: int, seq_len: int) -> dict:
        """One timed request: the first ``batch`` held-out items, texts padded to exactly ``seq_len`` tokens."""
        items = self.splits["evaluation"][:batch]
        if len(items) < batch:
            raise DataError(f"a request of {batch} needs {batch} held-out items, the evaluation split has {len(items)}; raise data.eval_limit")
        if self.kind == "tokens":
            return tokenize(processor, items, seq_len, fixed=True)
        return pixel_batches(processor, items, batch)[0]  # inputs only, never labels


def pixel_batches(processor, arrays: list[np.ndarray], batch_size: int) -> list[dict]:
    """Prepared uint8 (H, W, 3) images through the model's image processor."""
    from PIL import Image

    return image_batches(processor, [Image.fromarray(a) for a in arrays], batch_size)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"missing {path}; run the prepare stage (dvc repro prepare) or `coformer prepare`")
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def prepare_data(
    kind: str,
    source: str,
    text_field: str,
    seed: int,
    calibration_limit: int | None,
    eval_limit: int | None,
    image_size: int,
    label_field: str | None = None,
) -> Prepared:
    """Read the calibration and evaluation splits of ``source`` (retrieval pairs for the builtin
    corpus; with ``label_field``, every item's class id)."""
    limits = {"calibration": calibration_limit, "evaluation": eval_limit}
    if kind == "pixels":
        read = {
            s: load_labelled_images(source, s, limits[s], label_field, seed) if label_field else (load_images(source, s, limits[s], seed, image_size), None)
            for s in SPLITS
        }
        splits = {s: [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images] for s, (images, _) in read.items()}
    else:
        read = {
            s: load_labelled_texts(source, s, limits[s], text_field, label_field, seed) if label_field else (load_texts(source, s, limits[s], text_field, seed), None)
            for s in SPLITS
        }
        splits = {s: texts for s, (texts, _) in read.items()}
    labels = {s: ids for s, (_, ids) in read.items() if ids is not None}
    pairs = load_pairs("evaluation", limit=eval_limit) if kind == "tokens" and source == BUILTIN else []
    return Prepared(kind, splits, pairs, labels)
