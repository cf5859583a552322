"""The one exception for user mistakes, shared by every package (no imports: a leaf).

A `UsageError` says what the user got wrong and how to fix it, in one line ("unknown knob
'max_num_seq' for policy 'continuous'; knobs: ..."). The command line prints it as
`batchsim: error: <message>` and exits 2; anything else that escapes is a bug and shows its
traceback. It subclasses ValueError so that callers that already catch bad input as
ValueError (configs' __post_init__, the Python API) keep working.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user (an unknown name, an impossible value, a bad file); the message
    names the problem and, where it can, what is valid."""
