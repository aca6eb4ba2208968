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
sys.exit(code)
