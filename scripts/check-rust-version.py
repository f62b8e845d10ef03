#!/usr/bin/env python3
"""Keeps Cargo.toml's rust-version true.

1. The lockfile: every crate the build uses on this platform states the Rust it needs (its own
   rust-version, and edition 2024 needs 1.85); the declared minimum must be at least the
   highest of them.
2. The code: when that toolchain is installed (`make test` installs it with rustup where rustup
   exists), `cargo check --locked --all-targets` runs with it, so our own code cannot quietly
   use a newer feature either.

Prints one line per finding; exits 1 when rust-version is not true."""

import json
import os
import re
import shutil
import subprocess
import sys

top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDITION_NEEDS = {"2015": "1.0", "2018": "1.31", "2021": "1.56", "2024": "1.85"}


def parse(v):
    """"1.85" -> (1, 85, 0)"""
    parts = tuple(int(x) for x in v.split(".")[:3])
    return parts + (0,) * (3 - len(parts))


def show(v):
    """(1, 85, 0) -> "1.85"; (1, 85, 1) -> "1.85.1" """
    return ".".join(map(str, v[:2] if v[2] == 0 else v))


def toolchain_name(v):
    """The exact toolchain the minimum names: 1.85 is 1.85.0."""
    return ".".join(map(str, v))


def main():
    manifest = open(os.path.join(top, "Cargo.toml")).read()
    m = re.search(r'^rust-version\s*=\s*"([0-9.]+)"', manifest, re.M)
    if not m:
        print("rust-version: Cargo.toml states no rust-version")
        return 1
    declared = parse(m.group(1))
    cargo = os.environ.get("CARGO", "cargo")
    host = re.search(r"^host: (\S+)", subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, check=True).stdout, re.M).group(1)
    meta = json.loads(subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--locked", "--filter-platform", host],
        cwd=top, capture_output=True, text=True, check=True).stdout)
    used = {node["id"] for node in meta["resolve"]["nodes"]}
    root = meta["resolve"]["root"]
    need, by = (1, 0, 0), "nothing"
    for pkg in meta["packages"]:
        if pkg["id"] not in used or pkg["id"] == root:
            continue
        for v, why in ((pkg.get("rust_version"), "its rust-version"),
                       (EDITION_NEEDS.get(pkg["edition"]), f"edition {pkg['edition']}")):
            if v and parse(v) > need:
                need, by = parse(v), f"{pkg['name']} {pkg['version']} ({why})"
    if declared < need:
        print(f"rust-version: Cargo.toml says {show(declared)}, but the lockfile needs "
              f"{show(need)} for {by}: raise rust-version to {show(need)}")
        return 1
    print(f"rust-version: {show(declared)} >= {show(need)}, the most any locked crate needs "
          f"({by})")

    tc = toolchain_name(declared)
    rustup = shutil.which("rustup")
    installed = rustup and subprocess.run(
        [rustup, "run", tc, "rustc", "--version"], capture_output=True).returncode == 0
    if not installed:
        print(f"rust-version: toolchain {tc} is not installed: the code itself was not built "
              f"with it (rustup toolchain install {tc} --profile minimal)")
        return 0
    env = dict(os.environ, RUSTUP_TOOLCHAIN=tc)
    env.pop("CARGO", None)
    env.pop("RUSTC", None)
    rc = subprocess.run(["cargo", "check", "--locked", "--all-targets", "--quiet",
                         "--target-dir", os.path.join(top, "build", "msrv")],
                        cwd=top, env=env).returncode
    if rc:
        print(f"rust-version: the code does not build with Rust {tc}: raise rust-version or "
              "avoid the newer feature")
        return 1
    print(f"rust-version: the code builds with Rust {tc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
