"""The one formatter of every ``python -m indexer build ...`` line the tool suggests (errors, the app's pages): the
options always in the same order, every value shell-quoted, so that each suggestion runs as printed
(tests/test_suggested_commands.py runs them). Standard library only: the app and ``--help`` import it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional, Tuple

# a placeholder the user replaces: shown as is
DIR = "DIR"


@dataclass(frozen=True)
class BuildCommand:
    model: str  # a registry name, or "all"
    split: Optional[str]  # None with ``images``: the folder names it
    data_root: Optional[str] = None
    dataset: Optional[str] = None  # a downloadable data set's name (--dataset), when there is no data root
    limit: Optional[int] = None
    checkpoint: Optional[str] = None
    random_init: bool = False
    descriptor: Optional[str] = None  # a Descriptor's name (embed.common.descriptor): its own collection
    whitening: Optional[str] = None  # the learned whitening's file, for a whitened descriptor
    normalize: bool = False
    decode: Optional[str] = None
    precision: Optional[str] = None
    force: bool = False
    recreate: bool = False
    uri: Optional[str] = None
    images: Optional[str] = None  # --images DIR, instead of --split and --data-root
    label_options: Tuple[str, ...] = ()  # LabelSource.options(): how the --images folder is labelled

    def __str__(self) -> str:
        options = (
            ("--model", self.model),
            ("--images", self.images),
            *zip(self.label_options[::2], self.label_options[1::2]),
            ("--split", self.split),
            ("--data-root", self.data_root),
            ("--dataset", self.dataset),
            ("--limit", self.limit),
            ("--checkpoint", self.checkpoint),
            ("--random-init", self.random_init),
            ("--descriptor", self.descriptor),
            ("--whitening", self.whitening),
            ("--normalize", self.normalize),
            ("--decode", self.decode),
            ("--precision", self.precision),
            ("--force", self.force),
            ("--recreate", self.recreate),
            ("--uri", self.uri),
        )
        parts = ["python -m indexer build"]
        for option, value in options:
            if value is True:
                parts.append(option)
            elif value is not None and value is not False:
                parts.append(f"{option} {_quoted(value)}")
        return " ".join(parts)


def _quoted(value: object) -> str:
    text = str(value)
    return text if text == DIR else shlex.quote(text)
