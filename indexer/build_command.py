"""The one formatter of every ``python -m indexer build ...`` line the tool suggests (errors, the app's pages): the
options always in the same order, every value shell-quoted, so that each suggestion runs as printed
(tests/test_suggested_commands.py runs them). Standard library only: the app and ``--help`` import it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional

# a placeholder the user replaces: shown as is
DIR = "DIR"


@dataclass(frozen=True)
class BuildCommand:
    model: str  # a registry name, or "all"
    split: str
    data_root: Optional[str] = None
    dataset: Optional[str] = None  # a downloadable data set's name (--dataset), when there is no data root
    limit: Optional[int] = None
    checkpoint: Optional[str] = None
    random_init: bool = False
    normalize: bool = False
    decode: Optional[str] = None
    precision: Optional[str] = None
    force: bool = False
    recreate: bool = False
    uri: Optional[str] = None

    def __str__(self) -> str:
        values = (
            ("--model", self.model),
            ("--split", self.split),
            ("--data-root", self.data_root),
            ("--dataset", self.dataset),
            ("--limit", self.limit),
            ("--checkpoint", self.checkpoint),
        )
        flags = (
            ("--random-init", self.random_init),
            ("--normalize", self.normalize),
        )
        after = (("--decode", self.decode), ("--precision", self.precision))
        ends = (("--force", self.force), ("--recreate", self.recreate))
        parts = ["python -m indexer build"]
        parts += [f"{option} {_quoted(value)}" for option, value in values if value is not None]
        parts += [flag for flag, on in flags if on]
        parts += [f"{option} {_quoted(value)}" for option, value in after if value is not None]
        parts += [flag for flag, on in ends if on]
        if self.uri is not None:
            parts.append(f"--uri {_quoted(self.uri)}")
        return " ".join(parts)


def _quoted(value: object) -> str:
    text = str(value)
    return text if text == DIR else shlex.quote(text)
