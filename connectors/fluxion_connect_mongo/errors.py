"""Errors the MongoDB connector raises on purpose.

``ResumeTokenLostError`` is a user-fixable condition (the checkpoint points
before the oldest history the server keeps), so it belongs to the
:class:`~fluxion_flows.errors.FluxionError` family and names the recovery
options instead of skipping ahead silently.

``PartialWriteError`` reports the documents of a batch that the server
refused one by one (duplicate keys, validation failures) after the rest of
the batch was written. It subclasses ``NonRetryableError``: retrying the
whole batch cannot fix a duplicate key, and an executor that does not know
about per-document failures then hands the batch straight to its fallback
(dead letter), which over-reports but loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.errors import OperationFailure

from fluxion_flows.errors import FluxionError
from fluxion_flows.spi import Document, NonRetryableError

HISTORY_LOST_CODES = frozenset({136, 280, 286})
"""CappedPositionLost, ChangeStreamFatalError, ChangeStreamHistoryLost."""
INVALID_TOKEN_CODE = 260
DUPLICATE_KEY_CODES = frozenset({11000, 11001})


class ResumeTokenLostError(FluxionError):
    """The server no longer has the change-stream history the checkpointed resume token points into."""

    def __init__(self, namespace: str, detail: str) -> None:
        super().__init__(
            f"the change stream on `{namespace}` cannot resume from the checkpointed resume token: "
            f"the server no longer has that point of its history ({detail})",
            hint=(
                "changes since the checkpoint cannot be replayed; recover by restarting with "
                "`startFrom: latest` (follow new changes only, the missed ones are skipped) or with "
                "`initialSnapshot: true` and `startFrom: earliest` (copy the collection again, then follow); "
                "a larger oplog window prevents this"
            ),
        )
        self.namespace = namespace


def as_resume_error(error: OperationFailure, namespace: str) -> ResumeTokenLostError | None:
    """The FluxionError for a server error meaning 'cannot resume there', else None."""
    message = str(error.details.get("errmsg", "")) if error.details else str(error)
    if error.code in HISTORY_LOST_CODES or error.code == INVALID_TOKEN_CODE:
        return ResumeTokenLostError(namespace, f"server error {error.code}: {message}")
    return None


class DocumentWriteError(Exception):
    """Why the server (or the key extraction) refused one document of a batch."""

    def __init__(self, message: str, *, code: int | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.index = index
        self.error_type = "DuplicateKeyError" if code in DUPLICATE_KEY_CODES else "DocumentWriteError"

    @classmethod
    def from_write_error(cls, detail: Mapping[str, Any], index: int) -> DocumentWriteError:
        code = detail.get("code")
        return cls(
            str(detail.get("errmsg", "write error")),
            code=code if isinstance(code, int) else None,
            index=index,
        )


class PartialWriteError(NonRetryableError):
    """Some documents of a batch were refused; every other document of the batch is durable.

    ``failed`` pairs each refused document (as the sink received it, ``_meta``
    included) with its :class:`DocumentWriteError`; ``written`` counts the
    documents that landed.
    """

    error_type = "PartialWriteError"

    def __init__(self, failed: list[tuple[Document, DocumentWriteError]], written: int) -> None:
        kinds = sorted({err.error_type for _, err in failed})
        super().__init__(
            f"{len(failed)} document(s) of the batch were refused ({', '.join(kinds)}); "
            f"{written} written. First: {failed[0][1]}"
        )
        self.failed = failed
        self.written = written

    @property
    def documents(self) -> list[Document]:
        return [doc for doc, _ in self.failed]

    @property
    def failed_documents(self) -> list[Document]:
        """What the executor's error policy receives: only the refused documents."""
        return self.documents
