"""`netcompose completion bash|zsh`: shell completion scripts made from the argument parser,
so they name every subcommand and option the CLI has."""
from __future__ import annotations

import argparse


def _commands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    top = sorted(o for a in parser._actions for o in a.option_strings)
    return {"": top, **{name: sorted(o for a in p._actions for o in a.option_strings)
                        for name, p in sub.choices.items()}}


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    commands = _commands(parser)
    names = " ".join(sorted(n for n in commands if n))
    cases = "\n".join(f"    {name}) opts=\"{' '.join(opts)}\" ;;" for name, opts in commands.items() if name)
    body = f'''_netcompose() {{
  local cur cmd opts i
  cur="${{COMP_WORDS[COMP_CWORD]}}"
  cmd=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case " {names} " in *" ${{COMP_WORDS[i]}} "*) cmd="${{COMP_WORDS[i]}}"; break ;; esac
  done
  case "$cmd" in
{cases}
    *) opts="{' '.join(commands[''])} {names}" ;;
  esac
  if [[ "$cur" != -* && -z "$cmd" ]]; then opts="{names}"; fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  [[ "$cur" == -* || -n "$cmd" ]] && COMPREPLY+=($(compgen -f -- "$cur"))
  return 0
}}
'''
    if shell == "bash":
        return body + "complete -F _netcompose netcompose\n"
    # zsh runs the bash function through bashcompinit.
    return "autoload -U +X bashcompinit && bashcompinit\n" + body + "complete -F _netcompose netcompose\n"
