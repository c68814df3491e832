"""What the store said while a test ran: its retry warnings, counted instead of timed."""

import logging
from typing import List


class RecordedRetries(logging.Handler):
    """Within ``with``: the "retrying" warnings of indexer.milvus_store, one per retry, in ``messages``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []
        self._logger = logging.getLogger("indexer.milvus_store")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "retrying" in message:
            self.messages.append(message)

    def __enter__(self) -> "RecordedRetries":
        self._level = self._logger.level
        self._logger.addHandler(self)
        if self._logger.getEffectiveLevel() > logging.WARNING:
            self._logger.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
