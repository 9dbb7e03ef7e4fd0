"""The former home of the queues, kept so that code importing `limetask_operator.queues` keeps
working: everything is in the admission package (admission/) now."""

from .admission import *  # noqa: F403
from .admission import __all__  # noqa: F401
