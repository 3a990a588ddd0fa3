"""The embedded default corpus: English text that ships with Python itself, no network needed.

Docstrings of the standard library become a retrieval task: each docstring's summary paragraph
(PEP 257: the text before the first blank line) is a query and the rest of the docstring its
document. Source files are read with ``ast`` rather than imported, so nothing is executed and no
module's import side effects (``antigravity`` opening a browser, ``this`` printing) can happen.
The reference topics of ``pydoc_data`` add plain prose for calibration texts.

Splits are assigned by a stable hash of the *top-level* module name, so a package never straddles
calibration and evaluation and the split is the same on every machine with the same Python.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from coformer.errors import DataError

SPLITS = ("calibration", "evaluation")
CALIBRATION_PERCENT = 80  # share of top-level modules (by hash bucket) that go to calibration
MIN_PAIRS = 1500  # below this the stdlib is topped up with installed libraries' docstrings
EXTRA_PACKAGES = ("numpy", "torch")  # fixed order in which libraries top the corpus up

# Folders that hold no library documentation worth learning from (tests, demos, bundled wheels,
# GUI code) or are not part of the standard library at all (site-packages).
SKIP_DIRS = {
    "__pycache__", "site-packages", "dist-packages", "test", "tests", "testing",
    "idlelib", "tkinter", "turtledemo", "ensurepip", "__phello__",
}  # fmt: skip
SKIP_MODULES = {"antigravity", "this"}

MIN_QUERY_CHARS, MAX_QUERY_CHARS, MIN_QUERY_WORDS = 20, 300, 4  # a real sentence, not a title
MIN_DOCUMENT_CHARS, MIN_DOCUMENT_WORDS = 80, 12  # enough body to be worth retrieving
MIN_TOPIC_PARAGRAPH_CHARS = 80

DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)  # nodes with docstrings
STATEMENT_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")  # fields holding statements


@dataclass(frozen=True)
class RetrievalPair:
    module: str  # dotted module the docstring comes from, e.g. "email.mime.text"
    query: str  # the docstring's summary paragraph, whitespace collapsed
    document: str  # the rest of the docstring (cleaned indentation)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def split_of(unit: str) -> str:
    """Calibration or evaluation for a top-level module (or topic) name; stable across runs."""
    bucket = int(hashlib.sha256(unit.encode()).hexdigest(), 16) % 100
    return SPLITS[0] if bucket < CALIBRATION_PERCENT else SPLITS[1]


def source_files(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    """(dotted module, path) for every ``.py`` file under ``root``, in sorted walk order."""
    found = []
    for folder, dirs, files in os.walk(root):
        # "-" marks folders that are not packages, e.g. config-3.11-x86_64-linux-gnu
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("test") and "-" not in d)
        for name in sorted(files):
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            parts = list((Path(folder) / name).relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            module = ".".join(filter(None, [prefix, *parts]))
            if module and module.split(".")[-1] not in SKIP_MODULES:
                found.append((module, Path(folder) / name))
    return found


def docstrings(path: Path) -> list[str]:
    """Docstrings of the module, its classes and functions, in source order; [] if unparsable."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return []
    texts = [ast.get_docstring(n) for n in definitions(tree)]
    return [t for t in texts if t]


def definitions(node: ast.AST):
    """The module, classes and functions under ``node`` in source order.

    Only statement blocks are entered (docstrings cannot live inside expressions), which is
    several times faster than ``ast.walk`` over every node.
    """
    if isinstance(node, DOCUMENTED):
        yield node
    for field in STATEMENT_BLOCKS:
        for child in getattr(node, field, None) or ():
            yield from definitions(child)


def split_docstring(text: str) -> tuple[str, str] | None:
    """(summary, body) of a PEP 257 docstring, or None if either part is too thin to pair."""
    head, sep, body = text.strip().partition("\n\n")
    query, document = " ".join(head.split()), body.strip()
    if not sep or not MIN_QUERY_CHARS <= len(query) <= MAX_QUERY_CHARS:
        return None
    if len(query.split()) < MIN_QUERY_WORDS:
        return None
    if len(document) < MIN_DOCUMENT_CHARS or len(document.split()) < MIN_DOCUMENT_WORDS:
        return None
    return query, document


def collect(files: list[tuple[str, Path]], pairs: list[RetrievalPair], seen: set[str]) -> None:
    """Append the new pairs of ``files`` to ``pairs``; ``seen`` holds normalised queries and documents."""
    for module, path in files:
        for text in docstrings(path):
            split = split_docstring(text)
            if split is None:
                continue
            query, document = split
            keys = ("q:" + query.lower(), "d:" + " ".join(document.split()))
            if keys[0] in seen or keys[1] in seen:
                continue
            seen.update(keys)
            pairs.append(RetrievalPair(module, query, document))


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def package_files(name: str) -> list[tuple[str, Path]]:
    """Source files of an installed package, or [] where it is not installed."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return []
    return source_files(Path(next(iter(spec.submodule_search_locations))), prefix=name)


@cache
def build_pairs() -> tuple[RetrievalPair, ...]:
    """All pairs, deduplicated by query and by document, first occurrence in walk order wins.

    A first occurrence wins globally, so a duplicate can never sit in both splits.
    """
    pairs: list[RetrievalPair] = []
    seen: set[str] = set()
    collect(source_files(stdlib_root()), pairs, seen)
    for package in EXTRA_PACKAGES:
        if len(pairs) >= MIN_PAIRS:
            break
        collect(package_files(package), pairs, seen)
    if len(pairs) < MIN_PAIRS:
        raise DataError(
            f"the embedded corpus has only {len(pairs)} docstring pairs (< {MIN_PAIRS}); "
            f"this Python's standard library looks stripped: install {' or '.join(EXTRA_PACKAGES)}, "
            "or give a dataset as the data source"
        )
    return tuple(pairs)


def order_key(pair: RetrievalPair) -> str:
    """A fixed pseudo-random order, so that a ``limit`` samples all modules, not the first ones."""
    return hashlib.sha256(f"{pair.module}\n{pair.query}".encode()).hexdigest()


@cache
def split_pairs(split: str) -> tuple[RetrievalPair, ...]:
    chosen = [p for p in build_pairs() if split_of(p.module.split(".")[0]) == split]
    return tuple(sorted(chosen, key=order_key))


def load_pairs(split: str = "calibration", limit: int | None = None) -> list[RetrievalPair]:
    """(query, document) pairs of the embedded corpus for one split, in a fixed shuffled order."""
    pairs = split_pairs(check_split(split))
    return list(pairs[:limit] if limit is not None else pairs)


@cache
def topic_paragraphs(split: str) -> tuple[str, ...]:
    """Paragraphs of the language-reference topics in ``pydoc_data``, split by topic name."""
    from pydoc_data.topics import topics

    chosen = (topics[name] for name in sorted(topics) if split_of("pydoc:" + name) == split)
    paragraphs = (p.strip() for text in chosen for p in text.split("\n\n"))
    return tuple(dict.fromkeys(p for p in paragraphs if len(p) >= MIN_TOPIC_PARAGRAPH_CHARS))


def builtin_texts(split: str) -> list[str]:
    """Every text of one split: the pairs' queries and documents, then the reference topics."""
    texts = [t for p in split_pairs(check_split(split)) for t in (p.query, p.document)]
    return texts + list(topic_paragraphs(split))
