"""The docs name only commands that exist: every ``osreg COMMAND`` in a code block or inline code of the README and
docs/ is a command of the CLI."""

from __future__ import annotations

import re
from pathlib import Path

from osreg.cli import main

ROOT = Path(__file__).resolve().parents[1]
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
COMMAND = re.compile(r"(?:^|[\s(|;$`])osreg(?:\s+-[vq]+)*\s+([a-z][a-z0-9-]*)", re.M)


def commands_in(text: str) -> set[str]:
    return {m.group(1) for code in CODE.findall(text) for m in COMMAND.finditer(code)}


def test_commands_in_the_docs_exist():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {doc.name: commands_in(doc.read_text()) for doc in docs}
    assert set().union(*named.values()) >= {"register", "match", "batch", "benchmark", "train", "apply", "methods"}
    unknown = {name: sorted(cmds - set(main.commands)) for name, cmds in named.items() if cmds - set(main.commands)}
    assert unknown == {}


def test_the_check_finds_a_command_that_does_not_exist():
    assert commands_in("run `osreg text-bank build` then\n```\nosreg -q register A B -o C\n```") == {"text-bank",
                                                                                                    "register"}
