"""What a failed job tells the user: what went wrong and what to do next."""

from __future__ import annotations

from napari_dlbio.core.errors import DlbioError


def error_message(error: BaseException, what: str) -> str:
    """A notification text for a failed job: what went wrong and what to do next.

    Parameters
    ----------
    error
        The exception the job raised.
    what
        What the job was doing, e.g. ``"Training"``.
    """
    if isinstance(error, DlbioError):
        return f"{what}: {error}"
    if _is_out_of_memory(error):
        return (
            f"{what} ran out of memory. Lower the batch size or the patch / tile size "
            "(Advanced), predict the current slice instead of the whole stack, or close other "
            "programs, then try again."
        )
    return (
        f"{what} failed ({type(error).__name__}: {error}). Your layers are unchanged; check "
        "that the image, annotation and model belong together and try again."
    )


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    # TensorFlow's ResourceExhaustedError, by name: the engine reports it as a MemoryError.
    return any(cls.__name__ == "ResourceExhaustedError" for cls in type(error).__mro__)
