"""The one error type for mistakes a user can fix: bad data, parameters or models."""


class KdflowInputError(ValueError):
    """A problem with the user's input, stated in one sentence that names the parameter and the fix.

    Raised before any expensive work starts; the command line prints the message alone, without a traceback.
    """


class KdflowFailure(RuntimeError):
    """Something kdflow ran (a pipeline step, an image build) failed; the message says where its log is."""


def first_line(error: BaseException) -> str:
    """An exception's message as one line of a sentence: its first line, or its type when it has none."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
