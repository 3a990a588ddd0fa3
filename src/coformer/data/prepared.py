"""The prepare stage's folder: the data every later stage reads, materialised once.

Later stages read this folder instead of opening the source again, so a changed ``data.*``
parameter invalidates ``prepare`` and, through its outputs, exactly the stages that read them.

Layout (one folder):

* ``calibration.jsonl`` / ``evaluation.jsonl`` — one ``{"text": ...}`` per line (text models);
* ``calibration.safetensors`` / ``evaluation.safetensors`` — one uint8 (H, W, 3) image per key,
  in order (image models; safetensors, never pickle);
* ``pairs.jsonl`` — held-out ``{"module", "query", "document"}`` retrieval pairs (the builtin
  corpus has them; other sources leave it empty).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from coformer.data.batching import image_batches, text_batches, tokenize
from coformer.data.corpus import RetrievalPair, load_pairs
from coformer.data.images import load_images
from coformer.data.sources import BUILTIN, load_texts
from coformer.errors import DataError

SPLITS = ("calibration", "evaluation")
PAIRS = "pairs.jsonl"


@dataclass
class Prepared:
    kind: Literal["tokens", "pixels"]  # what the model takes, as ``SubModelConfig.input_kind`` says
    splits: dict[str, list]  # split -> texts, or uint8 (H, W, 3) images
    pairs: list[RetrievalPair]  # held-out retrieval pairs (empty without a retrieval task)

    def files(self, folder: Path) -> list[Path]:
        suffix = ".jsonl" if self.kind == "tokens" else ".safetensors"
        return [folder / f"{split}{suffix}" for split in SPLITS] + [folder / PAIRS]

    def save(self, folder: str | Path) -> list[Path]:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = self.files(folder)
        for split, path in zip(SPLITS, paths):
            if self.kind == "tokens":
                write_jsonl(path, [{"text": t} for t in self.splits[split]])
            else:
                save_file({str(i): image for i, image in enumerate(self.splits[split])}, str(path))
        write_jsonl(paths[-1], [asdict(p) for p in self.pairs])
        return paths

    @classmethod
    def load(cls, folder: str | Path) -> Prepared:
        folder = Path(folder)
        kind = "tokens" if (folder / "calibration.jsonl").is_file() else "pixels"
        if kind == "pixels" and not (folder / "calibration.safetensors").is_file():
            raise DataError(f"{folder} holds no prepared data; run the prepare stage (dvc repro prepare) or `coformer prepare`")
        splits = {}
        for split in SPLITS:
            if kind == "tokens":
                splits[split] = [row["text"] for row in read_jsonl(folder / f"{split}.jsonl")]
            else:
                from safetensors.numpy import load_file

                images = load_file(str(folder / f"{split}.safetensors"))
                splits[split] = [images[str(i)] for i in range(len(images))]
        pairs = [RetrievalPair(**row) for row in read_jsonl(folder / PAIRS)]
        return cls(kind, splits, pairs)

    def batches(
        self, processor, split: str, batch_size: int, max_length: int, limit: int | None = None, by_length: bool = False
    ) -> list[dict]:
        """Model inputs of the first ``limit`` items of ``split``: tokenised texts or processed pixels.
        ``by_length`` sorts texts by length first, so batches pad little (the metrics do not change)."""
        items = self.splits[split][:limit]
        if self.kind == "tokens":
            return text_batches(processor, sorted(items, key=len) if by_length else items, batch_size, max_length)
        from PIL import Image

        return image_batches(processor, [Image.fromarray(a) for a in items], batch_size)

    def request(self, processor, batch: int, seq_len: int) -> dict:
        """One timed request: the first ``batch`` held-out items, texts padded to exactly ``seq_len`` tokens."""
        items = self.splits["evaluation"][:batch]
        if len(items) < batch:
            raise DataError(f"a request of {batch} needs {batch} held-out items, the evaluation split has {len(items)}; raise data.eval_limit")
        if self.kind == "tokens":
            return tokenize(processor, items, seq_len, fixed=True)
        return self.batches(processor, "evaluation", batch, seq_len, limit=batch)[0]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"missing {path}; run the prepare stage (dvc repro prepare) or `coformer prepare`")
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def prepare_data(
    kind: str, source: str, text_field: str, seed: int, calibration_limit: int | None, eval_limit: int | None, image_size: int
) -> Prepared:
    """Read the calibration and evaluation splits of ``source`` (retrieval pairs for the builtin corpus)."""
    limits = {"calibration": calibration_limit, "evaluation": eval_limit}
    if kind == "pixels":
        splits = {
            s: [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in load_images(source, s, limits[s], seed, image_size)]
            for s in SPLITS
        }
        return Prepared(kind, splits, [])
    splits = {s: load_texts(source, s, limits[s], text_field, seed) for s in SPLITS}
    pairs = load_pairs("evaluation", limit=eval_limit) if source == BUILTIN else []
    return Prepared(kind, splits, pairs)
