"""`veylor completion bash|zsh|fish` in the real shells: each script is valid, and
completes subcommands, options, option choices and file names as a user's Tab does.

bash: the completion function is called as readline calls it (COMP_WORDS, COMP_CWORD)
and COMPREPLY read back. zsh: an interactive zsh in tmux with the script in $fpath, a
line typed and Tab pressed. fish: `complete -C`. zsh and fish are skipped where they
are not installed (.ci/run installs them). Every option of every command is checked,
walking the parser: a new option completes without anyone editing a script."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_veylor

from veylor.cliparser import build_parser

REPO = Path(__file__).resolve().parents[2]
NEEDS_ZSH = pytest.mark.skipif(
    shutil.which("zsh") is None or shutil.which("tmux") is None,
    reason="needs zsh and tmux (.ci/run installs them)",
)
NEEDS_FISH = pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish (.ci/run installs it)")


def parser_commands() -> dict[str, argparse.ArgumentParser]:
    """The parser's commands, walked with argparse itself ("" is veylor without one)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.nargs == argparse.PARSER)
    return {"": parser, **sub.choices}


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {f for a in parser._actions for f in a.option_strings if a.help != argparse.SUPPRESS}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict[str, Path]:
    """Each shell's script as `veylor completion SHELL` prints it, in a file."""
    where = tmp_path_factory.mktemp("completion")
    out = {}
    for shell in ("bash", "zsh", "fish"):
        result = run_veylor("completion", shell)
        assert result.returncode == 0, result.stderr
        name = {"bash": "veylor", "zsh": "_veylor", "fish": "veylor.fish"}[shell]
        (where / shell).mkdir()
        out[shell] = where / shell / name
        out[shell].write_text(result.stdout)
    return out


@pytest.fixture
def files(tmp_path) -> Path:
    """A working directory with files to complete: myconfig.yaml, mydir/, other.txt."""
    (tmp_path / "myconfig.yaml").write_text("")
    (tmp_path / "mydir").mkdir()
    (tmp_path / "other.txt").write_text("")
    return tmp_path


def test_completion_prints_each_shells_script_and_refuses_others(scripts):
    assert scripts["bash"].read_text().startswith("# bash completion for veylor")
    assert scripts["zsh"].read_text().startswith("#compdef veylor\n")
    assert "complete -c veylor" in scripts["fish"].read_text()
    refused = run_veylor("completion", "tcsh")
    assert refused.returncode == 2 and "invalid choice: 'tcsh'" in refused.stderr


# bash -------------------------------------------------------------------------------

BASH_DRIVER = """\
source "$1"; shift
spec=$(complete -p veylor) || exit 3
fn=${spec#*-F }; fn=${fn%% *}
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$fn" veylor "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\\n' "${COMPREPLY[@]}"
"""


def bash_complete(script: Path, *words: str, cwd: Path | None = None) -> set[str]:
    """What bash's completion function offers for the command line ``words`` (the last
    is the word being completed), as readline would call it."""
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", BASH_DRIVER, "bash", str(script), *words],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    return {line for line in result.stdout.splitlines() if line}


def test_bash_script_is_valid(scripts):
    result = subprocess.run(["bash", "-n", str(scripts["bash"])], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_bash_completes_commands_options_choices_and_files(scripts, files):
    bash = scripts["bash"]
    assert bash_complete(bash, "veylor", "ch") == {"check"}
    assert bash_complete(bash, "veylor", "") == set(parser_commands()) - {""}
    check = bash_complete(bash, "veylor", "check", "--")
    assert {"--json", "--against", "--config"} <= check and "--tui" not in check
    assert bash_complete(bash, "veylor", "--log-format", "") == {"text", "json"}
    assert bash_complete(bash, "veylor", "--log-format", "=", "j") == {"json"}  # --log-format=j
    assert bash_complete(bash, "veylor", "run", "--watch", "") == {"auto", "poll"}
    assert bash_complete(bash, "veylor", "-c", "my", cwd=files) == {"myconfig.yaml", "mydir"}
    assert bash_complete(bash, "veylor", "check", "--against", "o", cwd=files) == {"other.txt"}
    assert bash_complete(bash, "veylor", "status", "--token-file", "", cwd=files) == {
        "myconfig.yaml",
        "mydir",
        "other.txt",
    }
    # An option's value is not taken for the command; a number has nothing to offer.
    assert bash_complete(bash, "veylor", "-c", "myconfig.yaml", "st", cwd=files) == {"status"}
    assert bash_complete(bash, "veylor", "demo", "--port", "", cwd=files) == set()
    assert bash_complete(bash, "veylor", "completion", "") == {"bash", "zsh", "fish"}


def test_bash_completes_every_option_of_every_command(scripts, files):
    for name, parser in parser_commands().items():
        words = ["veylor", name] if name else ["veylor"]
        assert bash_complete(scripts["bash"], *words, "-") == flags(parser), name
        for action in parser._actions:
            if action.option_strings and action.choices:
                offered = bash_complete(scripts["bash"], *words, action.option_strings[-1], "")
                assert offered == set(action.choices), (name, action.option_strings)


# zsh --------------------------------------------------------------------------------


class Zsh:
    """An interactive zsh in a tmux session of its own, with the script in its $fpath."""

    def __init__(self, tmp_path: Path, script: Path, cwd: Path) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        home = tmp_path / "zhome"
        home.mkdir()
        (home / ".zshrc").write_text(
            f"fpath=({shlex.quote(str(script.parent))} $fpath)\nautoload -U compinit && compinit -u -D\nPS1='%% '\n"
        )
        env = f"env -i HOME={home} ZDOTDIR={home} TERM=xterm PATH=/usr/bin:/bin"
        subprocess.run(
            ["tmux", "-S", self.socket, "new-session", "-d", "-x", "160", "-y", "40", f"{env} zsh -i"],
            check=True,
            cwd=cwd,
            timeout=30,
        )
        self.until(lambda screen: screen.rstrip().endswith("%"), "the prompt")

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "-S", self.socket, "capture-pane", "-p"], capture_output=True, text=True, timeout=30
        ).stdout

    def until(self, predicate, what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")
            time.sleep(0.1)

    def tab(self, line: str, expected: str) -> str:
        """Type ``line`` on a clear screen, press Tab, wait for ``expected`` on the screen."""
        subprocess.run(["tmux", "-S", self.socket, "send-keys", "C-u", "C-l"], check=True, timeout=30)
        self.until(lambda screen: not screen.strip() or screen.strip() == "%", "a clear screen")
        subprocess.run(["tmux", "-S", self.socket, "send-keys", "-l", line], check=True, timeout=30)
        subprocess.run(["tmux", "-S", self.socket, "send-keys", "Tab"], check=True, timeout=30)
        return self.until(lambda screen: expected in screen, f"{expected!r} after {line!r} and Tab")  # (the
        # screen's lines come without their trailing blanks)

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30)


@NEEDS_ZSH
def test_zsh_script_is_valid(scripts):
    result = subprocess.run(["zsh", "-n", str(scripts["zsh"])], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@NEEDS_ZSH
def test_zsh_completes_commands_options_choices_and_files(scripts, files, tmp_path):
    zsh = Zsh(tmp_path, scripts["zsh"], files)
    try:
        zsh.tab("veylor ch", "% veylor check")
        zsh.tab("veylor check --ag", "% veylor check --against")
        assert "text" in zsh.tab("veylor --log-format ", "json")
        zsh.tab("veylor check -c myc", "% veylor check -c myconfig.yaml")
        listing = zsh.tab("veylor completion ", "fish")
        assert "bash" in listing and "zsh" in listing
    finally:
        zsh.kill()


# fish -------------------------------------------------------------------------------


def fish_complete(script: Path, line: str, cwd: Path | None = None) -> set[str]:
    """What fish offers for ``line`` (`complete -C`), without the descriptions."""
    result = subprocess.run(
        ["fish", "--no-config", "-c", f"source {shlex.quote(str(script))}; complete -C {shlex.quote(line)}"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    return {entry.split("\t")[0] for entry in result.stdout.splitlines() if entry}


@NEEDS_FISH
def test_fish_script_is_valid(scripts):
    result = subprocess.run(["fish", "-n", str(scripts["fish"])], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@NEEDS_FISH
def test_fish_completes_commands_options_choices_and_files(scripts, files):
    fish = scripts["fish"]
    assert fish_complete(fish, "veylor ch") == {"check"}
    assert fish_complete(fish, "veylor ") == set(parser_commands()) - {""}
    check = fish_complete(fish, "veylor check --")
    assert {"--json", "--against", "--config"} <= check and "--tui" not in check
    assert fish_complete(fish, "veylor --log-format ") == {"text", "json"}
    assert fish_complete(fish, "veylor -c my", cwd=files) == {"myconfig.yaml", "mydir/"}
    assert fish_complete(fish, "veylor check --against o", cwd=files) == {"other.txt"}
    assert fish_complete(fish, "veylor -c myconfig.yaml st", cwd=files) == {"status"}
    assert fish_complete(fish, "veylor completion ") == {"bash", "zsh", "fish"}
    for name, parser in parser_commands().items():
        line = f"veylor {name} --" if name else "veylor --"
        assert fish_complete(fish, line) == {f for f in flags(parser) if f.startswith("--")}, name
