"""``baton new-flow NAME``: write a flow module and its test from a template.

The flow claims a caller and a callee, calls them and settles a P2P — the smallest useful flow —
with the places to grow marked. The test runs it on the sim with virtual phones, checks who hears
whom, and runs ``baton check`` on it. Both pass as written.
"""

from __future__ import annotations

import argparse
import keyword
import sys
from pathlib import Path

from baton.flows import LIBRARY

__all__ = ["main", "write"]

FLOW = '''"""{title}: <say in one sentence what it does for a dispatcher>."""

from __future__ import annotations

from baton.core import P2P, CallFailed, FlowInterrupted, Priority, Session, Tone, User, flow


@flow(priority=Priority.ROUTINE, permission="{name}")
async def {name}(s: Session, caller: User, callee: User, ring: float = 30.0) -> str:
    """<One line for the console: what starting this flow does.>"""
    await s.claim(caller, callee)  # take both users (a lower priority is preempted)
    try:
        await s.dial(caller, timeout=ring)
        # the caller hears ringback while the callee's phone rings: never silence (dead air)
        ringback = await s.play(caller, Tone("ringback"), loop=True)
        await s.dial(callee, timeout=ring, caller=caller)
        await s.stop(ringback)
        await s.connect(caller, callee)
    except CallFailed as exc:
        s.note(f"{{exc.user.id}} did not answer: {{exc.cause.value}}")
        if s.leg_of(caller) is not None:  # the caller, on the line, hears why and is hung up
            await s.clear(caller)
            await s.play(caller, Tone("busy", 2.0))
            await s.hangup(caller)
        return "failed"
    except FlowInterrupted as exc:  # a party was taken or hung up: end the other's call too,
        s.note(f"{{exc.user.id}} lost: {{exc.code}}")  # rather than leave it in silence
        for user in (caller, callee):
            if s.owns(user) and s.leg_of(user) is not None:
                await s.hangup(user)
        return "lost"
    s.settle(P2P(caller, callee))  # hand both to a call that outlives the flow
    return "connected"
'''

TEST = '''"""Tests of {name}, on the sim switch with virtual phones and virtual time."""

from __future__ import annotations

from {name} import {name}

from baton.testing import World, assert_hears, assert_no_leaks, busy
from baton.testing.check import check_flow, default_against


async def test_{name}_connects(world: World) -> None:
    world.add("alice")
    world.add("bob")
    f = world.start({name}, world["alice"], world["bob"])
    assert await f.result() == "connected"
    assert_hears(world, "alice", {{"bob"}})
    world.sim.hang_up("bob")
    await world.run(1)
    assert_no_leaks(world)


async def test_{name}_busy(world: World) -> None:
    world.add("alice")
    world.add("bob", busy())
    f = world.start({name}, world["alice"], world["bob"])
    assert await f.result() == "failed"
    await world.run(3)  # the caller heard a busy tone and was hung up
    assert_no_leaks(world)


def test_{name}_passes_baton_check() -> None:
    report = check_flow({name}, default_against({name}), budget=40)
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]
'''

CONFTEST = """import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # so the tests import the flow modules here
"""


def write(name: str, folder: Path) -> list[Path]:
    """Write ``NAME.py`` and ``test_NAME.py`` (and a ``conftest.py`` if there is none)."""
    if not name.isidentifier() or keyword.iskeyword(name) or not name.islower():
        raise ValueError(f"{name!r} is not a flow name: use lower_case_with_underscores")
    # Refused here rather than later: the template's tests would pass, and then
    # `baton serve` would refuse the plug-in, or the module would shadow one Python needs.
    if name in LIBRARY:
        raise ValueError(
            f"{name!r} is a library flow's name, and baton serve refuses a plug-in that reuses"
            f" one (docs/guide.md, step 8): pick another, e.g. 'my_{name}'"
        )
    if name in sys.stdlib_module_names:
        raise ValueError(
            f"{name!r} is a module of the standard library; {name}.py beside your tests would"
            " shadow it: pick another name"
        )
    if name in ("baton", "conftest", "pytest"):
        raise ValueError(f"{name}.py would shadow the {name!r} module: pick another name")
    files = {
        folder / f"{name}.py": FLOW.format(name=name, title=name.replace("_", " ").capitalize()),
        folder / f"test_{name}.py": TEST.format(name=name),
    }
    existing = [p for p in files if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} exists already; not overwriting it")
    conftest = folder / "conftest.py"
    if not conftest.exists():
        files[conftest] = CONFTEST
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="baton new-flow", description="Write a flow module and its test from a template."
    )
    parser.add_argument("name", help="the flow's name, lower_case_with_underscores")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where (default: here)")
    args = parser.parse_args(argv)
    try:
        written = write(args.name, args.dir)
    except (ValueError, FileExistsError) as exc:
        print(f"baton new-flow: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(f"next: pytest {args.dir}   (then read docs/guide.md to grow it)")
    return 0
