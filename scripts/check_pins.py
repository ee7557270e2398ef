"""The pinned dev environment: check it against requirements/constraints.txt, or write that file.

    python scripts/check_pins.py requirements/constraints.txt           # exit 1 unless the environment
                                                                        # is exactly the pinned one
    python scripts/check_pins.py --write requirements/constraints.txt   # pin this environment (make lock)

A pin is ``name==version``; local version labels (torch's ``+cpu``) are left out of the file and ignored
in the comparison, so that the CPU and CUDA builds of one torch release both satisfy it. The project
itself (an editable install) is not pinned.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

PROJECT = "slac"
HEADER = """\
# Exact versions of the dev environment (`make setup`, CI). Written by `make lock` ({python}, {machine});
# do not edit by hand. Users installing the package get the open ranges of pyproject.toml instead.
"""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """Distribution name (normalized) -> version without local label, for this environment, less slac."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and _normalize(name) != PROJECT:
            found[_normalize(name)] = dist.version.split("+")[0]
    return found


def _cuda_runtime(name: str) -> bool:
    return name.startswith(("nvidia-", "cuda-"))


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if match is None:
            raise SystemExit(f"{path}:{number}: expected name==version, got {line!r}")
        pins[_normalize(match.group(1))] = match.group(2).split("+")[0]
    return pins


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("constraints", type=Path)
    parser.add_argument("--write", action="store_true", help="pin this environment into the file")
    args = parser.parse_args()
    env = installed()
    if args.write:
        lines = [f"{name}=={version}" for name, version in sorted(env.items())]
        header = HEADER.format(python=f"Python {platform.python_version()}", machine=platform.machine())
        args.constraints.write_text(header + "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} pins to {args.constraints}")
        return 0
    if not args.constraints.is_file():
        raise SystemExit(f"{args.constraints} does not exist; `make lock` writes it")
    pins = read_pins(args.constraints)
    wrong = [
        f"{name} {env[name]} (pinned {pins[name]})"
        for name in sorted(env)
        if name in pins and env[name] != pins[name]
    ]
    # a CUDA build of torch (`make setup TORCH_SPEC=... CONSTRAINTS=` on a GPU machine) brings NVIDIA's
    # runtime packages, which the CPU pins cannot list
    unpinned = [f"{name} {env[name]}" for name in sorted(env) if name not in pins and not _cuda_runtime(name)]
    if wrong or unpinned:
        print(f"the environment does not match {args.constraints}:", file=sys.stderr)
        for item in wrong:
            print(f"  other version: {item}", file=sys.stderr)
        for item in unpinned:
            print(f"  not pinned:    {item}", file=sys.stderr)
        print("run `make lock` if a dependency changed on purpose, else `make clean setup`", file=sys.stderr)
        return 1
    print(f"{len(env)} installed packages match {args.constraints}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
