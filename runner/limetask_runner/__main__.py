import sys
import time

from .signals import die_on_sigterm

die_on_sigterm()  # first: as process 1 of a container, SIGTERM is ignored without a handler
STARTED = time.time()  # before the imports below: the soft time limit counts them (main.deadline_start)

from .main import main  # noqa: E402 - after the handler, on purpose

sys.exit(main(STARTED))
