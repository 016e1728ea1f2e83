"""Write docs/api.md: the public API of Baton for flow authors, from its docstrings.

Run ``python scripts/gen_api_reference.py`` after changing a public docstring or signature;
``tests/test_api_reference.py`` fails while docs/api.md is out of date.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
from pathlib import Path

#: (module, names) in the order a newcomer needs them; None means the module's __all__.
SECTIONS: list[tuple[str, str, list[str] | None]] = [
    (
        "Flows and sessions",
        "baton.core",
        ["flow", "FlowSpec", "Session", "Flow", "Command", "CancelResult", "Priority"],
    ),
    (
        "Users, legs, meetings",
        "baton.core",
        ["User", "Leg", "LegState", "Direction", "Meeting", "Playback", "Recording"],
    ),
    ("Stable calls", "baton.core", ["CallInfo", "P2P", "MeetingCall", "PartnerPolicy"]),
    ("The manager", "baton.core", ["UserManager"]),
    (
        "Errors",
        "baton.core",
        [
            "BatonError",
            "NotOwner",
            "ClaimDenied",
            "Superseded",
            "FlowInterrupted",
            "Preempted",
            "UserHungUp",
            "CallFailed",
            "NoAnswer",
            "Busy",
            "Rejected",
            "Unreachable",
            "Incompatible",
            "SwitchFailed",
            "FlowCancelled",
            "FlowUsageError",
            "FlowEndedError",
            "InvalidArgument",
            "UnknownUser",
            "UnknownMeeting",
        ],
    ),
    (
        "Media vocabulary",
        "baton.core",
        ["Tone", "Prompt", "MeetingMode", "Cause", "EndReason", "PreemptionCause"],
    ),
    (
        "Testing",
        "baton.testing",
        [
            "World",
            "assert_hears",
            "assert_owner",
            "assert_played",
            "assert_recorded",
            "assert_idle",
            "assert_no_leaks",
            "assert_invariants",
            "run_virtual",
        ],
    ),
    (
        "Virtual phones",
        "baton.switch.sim",
        [
            "Behaviour",
            "answers",
            "busy",
            "never_answers",
            "rejects",
            "unreachable",
            "incompatible",
            "Timing",
        ],
    ),
    (
        "Checking",
        "baton.testing.check",
        ["check_flow", "check_setup", "default_against", "parse_schedule", "CheckReport"],
    ),
    ("Plug-ins", "baton.flows.registry", ["load_flows", "PluginError"]),
]


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no documentation)")


def _sig(obj: object) -> str:
    try:
        text = str(inspect.signature(obj, eval_str=True))  # type: ignore[arg-type]
    except (TypeError, ValueError, NameError):
        try:
            text = str(inspect.signature(obj))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return "(...)"
    for prefix in (
        "baton.core.model.",
        "baton.core.port.",
        "baton.core.flow.",
        "baton.core.callinfo.",
        "baton.core.ledger.",
        "baton.core.owner.",
        "baton.core.events.",
        "baton.core.ops.",
        "baton.core.errors.",
        "baton.core.priority.",
        "baton.testing.world.",
        "baton.switch.sim.switch.",
        "baton.core.manager.",
        "baton.testing.check.",
        "collections.abc.",
        "typing.",
    ):
        text = text.replace(prefix, "")
    return text


#: classes whose API for flow authors is a part of their public methods
ONLY = {
    "UserManager": {
        "add_user",
        "user",
        "users",
        "by_number",
        "meeting",
        "meetings",
        "start",
        "owner_of",
        "leg_of",
        "callinfo_of",
        "state_of",
        "close",
        "now",
    },
}


#: the seams between the manager and the objects it drives — the owner hooks
#: (baton.core.owner.OwnerHooks), a flow's launch, a leg's resolve, a CallInfo taking its users
#: from the settling flow — are documented in docs/core.md (map of the core), not offered to
#: flow authors
SEAMS = {
    "Flow": {"launch"},
    "Leg": {"resolve"},
    "CallInfo": {"take_from"},
}
OWNER_HOOKS = {
    name
    for name, member in vars(importlib.import_module("baton.core.owner").OwnerHooks).items()
    if inspect.isfunction(member)
}


def _members(cls: type) -> list[tuple[str, object]]:
    out = []
    only = ONLY.get(cls.__name__)
    seams = SEAMS.get(cls.__name__, set())
    if any(b.__name__ == "Owner" for b in cls.__mro__):
        seams = seams | OWNER_HOOKS
    for name, member in cls.__dict__.items():
        if name.startswith("_") or name in ("kind",) or (only is not None and name not in only):
            continue
        if name in seams:
            continue
        if (
            isinstance(member, property)
            or inspect.isfunction(member)
            or isinstance(member, staticmethod | classmethod)
        ):
            out.append((name, member))
    return out


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `scripts/gen_api_reference.py` — do not edit by hand.",
        "The guide ([guide.md](guide.md)) shows how the pieces fit together.",
        "",
    ]
    for title, module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## {title}", "", f"`from {module_name} import ...`", ""]
        for name in names or list(module.__all__):
            obj = getattr(module, name)
            if inspect.isclass(obj):
                bases = ", ".join(b.__name__ for b in obj.__bases__ if b is not object)
                lines += [f"### class `{name}`" + (f" ({bases})" if bases else ""), ""]
                lines += [_doc(obj), ""]
                if issubclass(obj, enum.Enum):
                    values = ", ".join(f"`{m.name}`" for m in obj)
                    lines += [f"Members: {values}.", ""]
                    continue
                if not issubclass(obj, BaseException):
                    init = obj.__dict__.get("__init__")
                    if init is not None and inspect.isfunction(init):
                        lines += [
                            f"`{name}{_sig(init).replace('(self, ', '(').replace('(self)', '()')}`",
                            "",
                        ]
                for mname, member in _members(obj):
                    if isinstance(member, property):
                        lines += [f"- **`{mname}`** (property) — {_doc(member).splitlines()[0]}"]
                        continue
                    fn = (
                        member.__func__
                        if isinstance(member, staticmethod | classmethod)
                        else member
                    )
                    sig = _sig(fn).replace("(self, ", "(").replace("(self)", "()")
                    first = _doc(fn).split("\n\n")[0].replace("\n", " ")
                    lines += [f"- **`{mname}{sig}`** — {first}"]
                lines.append("")
            else:
                lines += [f"### `{name}{_sig(obj)}`", "", _doc(obj), ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    target = Path(__file__).resolve().parents[1] / "docs" / "api.md"
    target.write_text(render())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
