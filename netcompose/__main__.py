import signal
import sys

try:
    from .cli import main
    code = main()
except KeyboardInterrupt:  # Ctrl-C outside what main handles (start-up, or while it reports)
    sys.stderr.write("error: interrupted\n")
    code = 130
# A Ctrl-C from now on (or one the interpreter has noted but not yet raised) must not turn
# the exit code into a death by SIGINT while the interpreter shuts down.
signal.signal(signal.SIGINT, signal.SIG_IGN)
# A KeyboardInterrupt that ended a string exec() (dataclasses and namedtuple build their
# methods so while modules import) leaves CPython's "unhandled KeyboardInterrupt" flag set
# even though it was caught, and under `python -m` the interpreter then exits by SIGINT (-2)
# instead of with `code`.  Every string evaluation clears the flag first: this one, which
# nothing can interrupt any more, clears it for good.
exec("")  # noqa: S102
sys.exit(code)
