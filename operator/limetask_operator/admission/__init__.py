"""Queues: an attempt's Job is made only once its task has a slot in its queue (admission.py)."""

from .admission import *  # noqa: F403
from .admission import __all__  # noqa: F401
