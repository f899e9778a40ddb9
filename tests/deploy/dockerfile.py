"""deploy/Dockerfile read as Docker reads it: instructions with their continuation lines joined, by stage."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip()))
            pending = ""
    return found


def final_stage(path: Path) -> list[Instruction]:
    """The instructions of the stage the image is: from its last FROM."""
    every = instructions(path)
    last = max(i for i, instruction in enumerate(every) if instruction.keyword == "FROM")
    return every[last:]


def exec_form(instruction: Instruction) -> list[str]:
    """A CMD or ENTRYPOINT written as a JSON array, as Docker runs it without a shell."""
    return json.loads(instruction.arguments)


def words(instruction: Instruction) -> list[str]:
    return shlex.split(instruction.arguments)
