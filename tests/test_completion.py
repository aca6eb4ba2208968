"""`completion bash|zsh`: the script completes subcommands and each subcommand's options."""
from __future__ import annotations

import subprocess

from .conftest import run_cli


def _complete(script: str, *words: str) -> list[str]:
    line = " ".join(words)
    program = f'source /dev/stdin <<<"$SCRIPT"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _netcompose; ' \
              'printf "%s\\n" "${COMPREPLY[@]}"'
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env={"SCRIPT": script}, timeout=30)
    return done.stdout.split()


def test_bash_completes_commands_and_options():
    script = run_cli("completion", "bash").stdout
    assert _complete(script, "netcompose", "ex") == ["exec", "explain"]
    assert set(_complete(script, "netcompose", "graph", "--o")) == {"--out", "--output-format", "--ovsdb", "--ovn-nb"}
    zsh = run_cli("completion", "zsh").stdout
    assert zsh.startswith("autoload -U +X bashcompinit") and "complete -F _netcompose netcompose" in zsh
