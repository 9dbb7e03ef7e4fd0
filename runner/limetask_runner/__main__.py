import sys

from .signals import die_on_sigterm

die_on_sigterm()  # first: as process 1 of a container, SIGTERM is ignored without a handler

from .main import main  # noqa: E402 - after the handler, on purpose

sys.exit(main())
