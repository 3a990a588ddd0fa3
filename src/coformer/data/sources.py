"""Texts from the embedded corpus or from anything Hugging Face ``datasets`` can open.

A data source is ``"builtin"`` (the docstring corpus), a local ``.txt`` / ``.jsonl`` / ``.json`` /
``.csv`` file or a folder of them, or a hub dataset id (which works only where the user has it
cached or has network). Every source is cut into the same two splits, ``calibration`` and
``evaluation``, deterministically from ``seed``, so a run can be repeated exactly.
"""

from __future__ import annotations

import random
from pathlib import Path

from coformer.data.corpus import SPLITS, builtin_texts, check_split
from coformer.errors import DataError

BUILTIN = "builtin"
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv"}  # suffix -> datasets builder
EVALUATION_SHARE = 0.2  # held out when a source has no evaluation split of its own
EVALUATION_SPLITS = ("test", "validation")  # a source's own held-out splits, in order of preference


def open_datasets(builder: str, what: str, **kwargs):
    """``datasets.load_dataset`` with its many failure types turned into one DataError."""
    import datasets

    try:
        return datasets.load_dataset(builder, **kwargs)
    except Exception as e:  # noqa: BLE001 - datasets raises anything from OSError to its own errors
        raise DataError(
            f"cannot load {what} through Hugging Face datasets ({type(e).__name__}: {e}); give "
            f"'{BUILTIN}', a local {'/'.join(BUILDERS)} file or folder, or a hub id you have cached"
        ) from e


def local_builder(path: Path) -> str:
    """The datasets builder for a local file or a folder of files of one kind."""
    files = sorted(p for p in path.rglob("*") if p.suffix in BUILDERS) if path.is_dir() else [path]
    builders = {BUILDERS.get(p.suffix) for p in files}
    if not files or None in builders:
        raise DataError(f"{path} holds no data file we can read; use {', '.join(BUILDERS)} files")
    if len(builders) > 1:
        raise DataError(f"{path} mixes file kinds {sorted(builders)}; keep one kind per data folder")
    return builders.pop()


def open_text_source(source: str):
    """The ``DatasetDict`` behind a local path or a hub id.

    A folder goes in as ``data_dir`` so that datasets reads its own splits from file names
    (``train.jsonl`` + ``test.jsonl``); a single file is one split.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return open_datasets(local_builder(path), f"{path}", data_dir=str(path))
    if path.exists():
        return open_datasets(local_builder(path), f"{path}", data_files=str(path))
    if path.suffix in BUILDERS:
        raise DataError(f"data file {source!r} does not exist; check the path")
    return open_datasets(source, f"hub dataset {source!r}")


def choose_split(dataset_dict, split: str, seed: int):
    """One of our two splits, shuffled from ``seed``: the source's own train/test(or validation)
    splits where it has both, else a seeded 80/20 cut of its one (or ``train``) split."""
    names = list(dataset_dict)
    held_out = next((n for n in EVALUATION_SPLITS if n in names), None)
    if "train" in names and held_out is not None:
        own = dataset_dict["train" if split == SPLITS[0] else held_out]
        return own.shuffle(seed=seed, keep_in_memory=True)
    whole = dataset_dict["train" if "train" in names else sorted(names)[0]]
    if len(whole) < 2:
        raise DataError(f"the data source has {len(whole)} row(s); it needs at least 2 to split")
    parts = whole.train_test_split(test_size=EVALUATION_SHARE, seed=seed)
    return parts["train" if split == SPLITS[0] else "test"]


def is_nonempty(text: str | None) -> bool:
    return bool(text and text.strip())


def text_rows(dataset_dict, text_field: str):
    """The source without rows whose ``text_field`` is empty, after checking the field is text.

    Empty rows (blank lines of a ``.txt``) go before the split, so split sizes count real texts.
    """
    import datasets

    first = next(iter(dataset_dict.values()))
    if text_field not in first.column_names:
        raise DataError(
            f"the data source has no text field {text_field!r}; available columns: "
            f"{', '.join(first.column_names)} (set text_field to one of them)"
        )
    feature = first.features[text_field]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise DataError(f"field {text_field!r} holds {feature}, not text; set text_field to a text column")
    return dataset_dict.filter(is_nonempty, input_columns=[text_field], keep_in_memory=True)


def first_rows(dataset, limit: int | None):
    """The first ``limit`` rows of a shuffled split (all of them for None)."""
    return dataset.select(range(min(len(dataset), limit))) if limit is not None else dataset


def load_texts(
    source: str = BUILTIN,
    split: str = "calibration",
    limit: int | None = None,
    text_field: str = "text",
    seed: int = 0,
) -> list[str]:
    """Texts of one split of a source, in an order shuffled from ``seed``."""
    check_split(split)
    if source == BUILTIN:
        texts = builtin_texts(split)
        random.Random(seed).shuffle(texts)
        return texts[:limit] if limit is not None else texts
    return list(text_split(source, split, limit, text_field, seed)[text_field])


def load_labelled_texts(
    source: str, split: str, limit: int | None, text_field: str, label_field: str, seed: int = 0
) -> tuple[list[str], list[int]]:
    """The texts ``load_texts`` gives for the same arguments and their class ids, read in one pass."""
    check_split(split)
    if source == BUILTIN:
        raise DataError("data.label_field is set but the builtin corpus has no labels; give a labelled data.source or set label_field: null")
    rows = text_split(source, split, limit, text_field, seed)
    return list(rows[text_field]), class_labels(rows, label_field, split)


def text_split(source: str, split: str, limit: int | None, text_field: str, seed: int):
    """The first ``limit`` rows with a non-empty ``text_field`` of one split of a file, folder or hub source."""
    rows = first_rows(choose_split(text_rows(open_text_source(source), text_field), split, seed), limit)
    if len(rows) == 0:
        raise DataError(f"split {split!r} of {source!r} has no non-empty {text_field!r} texts")
    return rows


def class_labels(dataset, label_field: str, split: str) -> list[int]:
    """Integer class ids of ``label_field``, refused where the column is missing, is not class ids,
    or holds unlabelled rows (-1, as hub test splits often do)."""
    import datasets

    if label_field not in dataset.column_names:
        raise DataError(f"the data source has no label field {label_field!r}; available columns: {', '.join(dataset.column_names)} (set data.label_field)")
    feature = dataset.features[label_field]
    if not (isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value) and feature.dtype.startswith("int"))):
        raise DataError(f"field {label_field!r} holds {feature}, not class ids; set data.label_field to an integer or class-label column")
    labels = [int(v) for v in dataset[label_field]]
    if any(v < 0 for v in labels):
        raise DataError(
            f"the {split} split has unlabelled rows ({label_field} = -1, as hub test splits often are); give data.source a "
            "local file or folder whose splits are all labelled"
        )
    return labels
