"""The web console in headless Chromium (Playwright driving Debian's /usr/bin/chromium) against a
real ``baton serve``: log in, see a user ring, start a conference, watch the grid change live,
be refused what the role does not allow, open a flow's trace."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import config_data
from .server import Server, serve

CHROMIUM = os.environ.get("BATON_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.realtime]

# Never skipped: `make test` installs Debian's chromium (scripts/system-packages.txt).
if not Path(CHROMIUM).exists():
    pytest.fail(
        f"no browser at {CHROMIUM}: run `make test` as root, or apt-get install chromium",
        pytrace=False,
    )
from playwright import sync_api  # noqa: E402

#: What a page waits for (an action, and each ``expect``, whose own default is 5 s): the page
#: reacts to a server and a browser sharing a loaded 2-core box. Generous, bounded.
WAIT_MS = 30_000
sync_api.expect.set_options(timeout=WAIT_MS)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # Phones answer fast, so a call connects while we watch; unit4 never answers (it rings).
    with serve(tmp_path, sim={"answer_after": 0.3}) as s:
        yield s


@pytest.fixture
def page(server: Server) -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            yield pg
            assert errors == [], errors
        finally:
            browser.close()


def tile(pg: object, user: str, state: str | None = None) -> str:
    return f'.tile[data-user="{user}"]' + (f'[data-state="{state}"]' if state else "")


def login(pg: object, base: str, user: str, password: str, mode: str = "flows") -> None:
    expect = sync_api.expect
    pg.goto(f"{base}/")  # type: ignore[attr-defined]
    pg.fill("#login-user", user)  # type: ignore[attr-defined]
    pg.fill("#login-password", password)  # type: ignore[attr-defined]
    pg.click("#login-submit")  # type: ignore[attr-defined]
    expect(pg.locator("#app")).to_be_visible()  # type: ignore[attr-defined]
    expect(pg.locator("#conn")).to_have_text("live")  # type: ignore[attr-defined]
    pg.click(f"#mode-{mode}")  # type: ignore[attr-defined]


def test_a_dispatcher_drives_calls_and_a_conference_from_the_browser(
    server: Server, page: object
) -> None:
    pg = page
    expect = sync_api.expect
    # A wrong password is refused on the login page.
    pg.goto(f"{server.base}/console/")  # type: ignore[attr-defined]
    pg.fill("#login-user", "disp1")  # type: ignore[attr-defined]
    pg.fill("#login-password", "nope")  # type: ignore[attr-defined]
    pg.click("#login-submit")  # type: ignore[attr-defined]
    expect(pg.locator("#login-error")).to_have_text("wrong user or password")  # type: ignore[attr-defined]
    login(
        pg, server.base, "disp1", "disp1-pw"
    )  # the flow launcher (a position opens in dispatcher mode)
    expect(pg.locator("#me")).to_contain_text("disp1")  # type: ignore[attr-defined]
    expect(pg.locator(tile(pg, "unit4", "idle"))).to_be_visible()  # type: ignore[attr-defined]

    # See a user ring: call unit4 (whose phone never answers) from the actions panel.
    pg.click(tile(pg, "unit4"))  # type: ignore[attr-defined]
    pg.click('#actions button[data-flow="call"]')  # type: ignore[attr-defined]
    expect(pg.locator('#flow-form-fields .field[data-param="caller"] select')).to_have_value(
        "disp1"
    )  # type: ignore[attr-defined]
    expect(pg.locator('#flow-form-fields .field[data-param="callee"] select')).to_have_value(
        "unit4"
    )  # type: ignore[attr-defined]
    pg.click("#flow-submit")  # type: ignore[attr-defined]
    expect(pg.locator(tile(pg, "unit4", "ringing"))).to_be_visible()  # type: ignore[attr-defined]
    expect(pg.locator("#status")).to_contain_text("call#1 started at ROUTINE")  # type: ignore[attr-defined]
    row = pg.locator('#flows tr[data-flow="call#1"]')  # type: ignore[attr-defined]
    expect(row).to_contain_text("ROUTINE")
    # Cancel it from the flows table: the grid goes back to idle, live.
    row.locator('button[data-action="cancel"]').click()
    expect(pg.locator(tile(pg, "unit4", "idle"))).to_be_visible()  # type: ignore[attr-defined]
    # disp1's position line is kept up (a keep user): connected, owned by nobody.
    expect(pg.locator(tile(pg, "disp1", "connected"))).to_be_visible()  # type: ignore[attr-defined]

    # Start a conference with two field units; watch them join, live.
    pg.click(tile(pg, "unit4"))  # type: ignore[attr-defined]  (deselect)
    pg.click(tile(pg, "unit1"))  # type: ignore[attr-defined]
    pg.click('#actions button[data-flow="conference"]')  # type: ignore[attr-defined]
    members = pg.locator('#flow-form-fields .field[data-param="members"]')  # type: ignore[attr-defined]
    expect(members.locator('input[value="unit1"]')).to_be_checked()
    members.locator('input[value="unit2"]').check()
    pg.click("#flow-submit")  # type: ignore[attr-defined]
    for user in ("disp1", "unit1", "unit2"):
        expect(pg.locator(tile(pg, user, "meeting"))).to_be_visible()  # type: ignore[attr-defined]
    expect(pg.locator(tile(pg, "unit1"))).to_contain_text("conference#1 · PRIORITY")  # type: ignore[attr-defined]
    meeting = pg.locator(".meeting").filter(has_text="conference#1")  # type: ignore[attr-defined]
    expect(meeting.locator('.member[data-member="unit2"] .mode')).to_have_text("speak")
    meeting.locator('.member[data-member="unit2"] button', has_text="mute").first.click()
    expect(meeting.locator('.member[data-member="unit2"] .mode')).to_have_text("muted")

    # A field unit calls the dispatcher queue from its virtual phone: it rings in, is queued.
    pg.click(tile(pg, "unit1"))  # type: ignore[attr-defined]  (deselect)
    pg.click(tile(pg, "unit3"))  # type: ignore[attr-defined]
    pg.fill("#phone-number", "100")  # type: ignore[attr-defined]
    pg.click("#phone-dial")  # type: ignore[attr-defined]
    expect(pg.locator(tile(pg, "unit3"))).to_contain_text("queued_call#1")  # type: ignore[attr-defined]

    # The trace of the conference, as a sequence diagram.
    pg.locator('#flows tr[data-flow="conference#1"] button[data-action="trace"]').click()  # type: ignore[attr-defined]
    expect(pg.locator("#trace svg.seq")).to_be_visible()  # type: ignore[attr-defined]
    heads = pg.locator("#trace svg.seq .head text").all_text_contents()  # type: ignore[attr-defined]
    assert heads[0] == "conference#1" and {"disp1", "unit1", "unit2"} <= set(heads)
    expect(pg.locator("#trace svg.seq .msg").first).to_be_visible()  # type: ignore[attr-defined]
    pg.click("#trace-close")  # type: ignore[attr-defined]

    # Refused: a dispatcher may not force release (a supervisor's right) …
    button = pg.locator('#actions button[data-flow="force_release"]')  # type: ignore[attr-defined]
    expect(button).to_have_attribute("data-allowed", "false")
    button.click()
    pg.click("#flow-submit")  # type: ignore[attr-defined]
    expect(pg.locator("#status")).to_contain_text("may not start force_release")  # type: ignore[attr-defined]
    expect(pg.locator("#status")).to_contain_text("403 forbidden")  # type: ignore[attr-defined]
    expect(pg.locator("#status")).to_have_class("error")  # type: ignore[attr-defined]
    expect(pg.locator(tile(pg, "unit1", "meeting"))).to_be_visible()  # type: ignore[attr-defined]

    # The dispatcher ends the conference from its command buttons: everyone is released, live.
    pg.locator('#flows tr[data-flow="conference#1"] button[data-command="end"]').click()  # type: ignore[attr-defined]
    for user in ("unit1", "unit2"):
        expect(pg.locator(tile(pg, user, "idle"))).to_be_visible()  # type: ignore[attr-defined]


def test_an_observer_sees_but_may_not_act(server: Server, page: object) -> None:
    pg = page
    expect = sync_api.expect
    login(pg, server.base, "obs1", "obs1-pw")
    expect(pg.locator('#actions button[data-flow="call"]')).to_have_attribute(
        "data-allowed", "false"
    )  # type: ignore[attr-defined]
    pg.click(tile(pg, "unit1"))  # type: ignore[attr-defined]
    pg.click('#actions button[data-flow="call"]')  # type: ignore[attr-defined]
    pg.click("#flow-submit")  # type: ignore[attr-defined]
    expect(pg.locator("#status")).to_contain_text("403 forbidden")  # type: ignore[attr-defined]
    expect(pg.locator(tile(pg, "unit1", "idle"))).to_be_visible()  # type: ignore[attr-defined]
    pg.click("#logout")  # type: ignore[attr-defined]
    expect(pg.locator("#login")).to_be_visible()  # type: ignore[attr-defined]


def test_a_peer_lines_caller_is_named_in_the_grid_and_the_log(server: Server, page: object) -> None:
    """A call from another tenant (docs/cluster.md): the stream's ``leg.caller`` message, with
    the line's view carrying ``caller``, names the caller in the line's tile and the live log —
    played here as the message a SIP cluster's shard sends (the sim has no peer lines)."""
    pg = page
    expect = sync_api.expect
    login(pg, server.base, "disp1", "disp1-pw", mode="dispatcher")
    pg.evaluate(  # type: ignore[attr-defined]
        """() => {
          const caller = { number: "2101", name: "a-unit1", tenant: "acme" };
          const line = { ...S.users.get("unit1"), caller };
          onMessage({ type: "event", users: [line], event: { kind: "leg.caller", seq: S.lastSeq + 1,
            t: 0, user: "unit1", leg: "sip-in-1", ...caller, marker: null, text: null } });
        }"""
    )
    name = pg.locator('.tile[data-user="unit1"] .name')  # type: ignore[attr-defined]
    expect(name).to_have_text("2101 (a-unit1, acme)")
    expect(pg.locator("#log")).to_contain_text(  # type: ignore[attr-defined]
        "2101 (a-unit1, acme) of another tenant is calling in on unit1"
    )


def test_a_peer_line_calling_out_is_named_by_the_number_dialled(
    server: Server, page: object
) -> None:
    """A call to another tenant goes out on a peer line (docs/cluster.md): the stream's
    ``leg.dialled`` message, with the line's view carrying ``dialled``, names the number in the
    line's tile and the live log, not the line."""
    pg = page
    expect = sync_api.expect
    login(pg, server.base, "disp1", "disp1-pw", mode="dispatcher")
    pg.evaluate(  # type: ignore[attr-defined]
        """() => {
          const line = { ...S.users.get("unit1"), dialled: "2101" };
          onMessage({ type: "event", users: [line], event: { kind: "leg.dialled", seq: S.lastSeq + 1,
            t: 0, user: "unit1", number: "2101", flow: "inbound_call#9", marker: null,
            text: null } });
        }"""
    )
    name = pg.locator('.tile[data-user="unit1"] .name')  # type: ignore[attr-defined]
    expect(name).to_have_text("call to 2101")
    expect(pg.locator("#log")).to_contain_text(  # type: ignore[attr-defined]
        "Calling 2101 of another tenant on unit1"
    )


def test_a_flows_notes_name_users_by_their_names(server: Server, page: object) -> None:
    """Flows write notes with user ids ("unit1's call is offered to disp1"); the live log shows
    the names the centre gave them, and leaves words that are no user's id alone."""
    pg = page
    expect = sync_api.expect
    login(pg, server.base, "disp1", "disp1-pw", mode="dispatcher")
    pg.evaluate(  # type: ignore[attr-defined]
        """() => {
          S.users.set("unit1", { ...S.users.get("unit1"), name: "Engine 1" });
          S.users.set("disp1", { ...S.users.get("disp1"), name: "Dispatcher 1" });
          onMessage({ type: "event", users: [], event: { kind: "flow.note", seq: S.lastSeq + 1,
            t: 0, flow: "queued_call#7", text: "queued_call#7: unit1's call is offered to disp1.",
            marker: null } });
        }"""
    )
    expect(pg.locator("#log")).to_contain_text(  # type: ignore[attr-defined]
        "Engine 1's call is offered to Dispatcher 1."
    )


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[Server]:
    # Positions start logged out; disp1's (virtual) phone rings until answered from the console.
    users = config_data(tmp_path)["users"]
    for u in users:
        if u["id"] == "disp1":
            u["sim"] = {"behaviour": "never_answers"}
    dispatch = {
        "number": "100",
        "emergency_number": "112",
        "queue_timeout": 300,
        "agent_state": "logged_out",
    }
    with serve(tmp_path, sim={"answer_after": 0.3}, users=users, dispatch=dispatch) as s:
        yield s


def test_a_dispatcher_goes_ready_and_answers_a_queued_call(centre: Server, tmp_path: Path) -> None:
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            login(pg, centre.base, "disp1", "disp1-pw", mode="dispatcher")
            expect(pg.locator("#mode-dispatcher")).to_have_attribute("aria-pressed", "true")
            expect(pg.locator("#actions-panel")).to_be_hidden()
            expect(pg.locator("#my-state")).to_have_text("Logged out")
            expect(pg.locator("#my-phone")).to_contain_text("Baton virtual phone")
            expect(pg.locator(tile(pg, "unit1"))).to_contain_text("Baton virtual phone")

            # A field unit calls the dispatcher number: nobody is ready, it waits in the queue.
            pg.click(tile(pg, "unit1"))
            pg.fill("#phone-number", "100")
            pg.click("#phone-dial")
            row = pg.locator('#queue tr[data-caller="unit1"]')
            expect(row).to_be_visible()
            expect(pg.locator("#queue-figures")).to_contain_text("1 waiting")

            # Going ready: the queue offers the call, the position's phone rings; answer it.
            pg.click("#go-ready")
            expect(pg.locator(tile(pg, "disp1"))).to_contain_text("Busy")
            expect(pg.locator("#log")).to_contain_text("disp1 is ready from the console")
            expect(row).to_contain_text("ringing disp1")
            # (Generous: a loaded machine delays the phone's ringing, not its outcome.)
            ring = pg.locator("#my-line .line")
            expect(ring).to_have_attribute("data-state", "ringing", timeout=30_000)
            pg.click("#my-answer")
            expect(pg.locator(tile(pg, "disp1", "talking"))).to_contain_text("talking with unit1")
            expect(pg.locator(tile(pg, "unit1", "talking"))).to_be_visible()
            expect(pg.locator("#no-callers")).to_be_visible()
            expect(pg.locator("#queue-figures")).to_contain_text("answered 1")
            shot = tmp_path / "console-dispatcher.png"
            pg.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("BATON_SCREENSHOTS")
            if keep:  # refresh the README's picture: BATON_SCREENSHOTS=docs
                shot.replace(Path(keep) / shot.name)

            # Hold and resume from "my line".
            pg.click("#my-hold")
            expect(pg.locator(tile(pg, "unit1"))).to_contain_text("hold#1")
            pg.click("#my-resume")
            expect(pg.locator(tile(pg, "disp1", "talking"))).to_contain_text("talking with unit1")

            # Hang up: both ends go back; the position is ready for the next caller.
            pg.click("#my-hangup")
            expect(pg.locator(tile(pg, "unit1", "idle"))).to_be_visible()
            expect(pg.locator("#my-state")).to_have_text("Ready")

            # The next caller is put through to another unit: select its tile, one click.
            pg.click(tile(pg, "unit2"))
            pg.fill("#phone-number", "100")
            pg.click("#phone-dial")
            # The line stayed up after the hang-up (an always-on position line): no ringing.
            expect(pg.locator(tile(pg, "disp1", "talking"))).to_contain_text("talking with unit2")
            pg.click(tile(pg, "unit2"))  # (deselect)
            pg.click(tile(pg, "unit3"))
            expect(pg.locator('#quick button[data-quick="conference"]')).to_be_enabled()
            pg.click('#quick button[data-quick="blind_transfer"]')
            expect(pg.locator(tile(pg, "unit2", "talking"))).to_contain_text("talking with unit3")
            expect(pg.locator(tile(pg, "disp1", "connected"))).to_be_visible()
            pg.click(tile(pg, "unit3"))  # (deselect)

            # The calls are in the history, with their traces; the audit is for supervisors.
            pg.fill("#history-user", "unit1")
            pg.click("#history-refresh")
            history = pg.locator("#history tbody")
            expect(history).to_contain_text("queued call 1")
            expect(history).to_contain_text("hold 1")
            expect(history).not_to_contain_text("None")
            history.locator("tr", has_text="queued call 1").locator("button").click()
            expect(pg.locator("#trace svg.seq")).to_be_visible()
            pg.click("#trace-close")
            expect(pg.locator("#audit-panel")).to_be_hidden()

            # A push-to-talk group opened from a unit's phone: join it, talk, release.
            pg.click(tile(pg, "unit1"))
            pg.fill("#phone-number", "802")
            pg.click("#phone-dial")
            pg.click(tile(pg, "unit1"))  # (deselect)
            group = pg.locator("#ptt .ptt").first
            expect(group).to_contain_text("north")  # the configured group, not its flow
            group.locator('button[data-action="join"]').click()
            expect(group.locator('button[data-action="talk"]')).to_be_visible()
            # Press and hold to talk, let go to release (the Talk button is a radio's button).
            group.locator('button[data-action="talk"]').hover()
            pg.mouse.down()
            expect(group.locator(".talker")).to_have_text("disp1 talks")
            pg.mouse.up()
            expect(group.locator(".talker")).to_have_text("floor idle")
            # A quick click is a press and a release: the floor ends idle, whatever order the
            # two commands' replies come back in (they are sent one after the other).
            for _ in range(3):
                group.locator("button.talk").click()
            expect(group.locator(".talker")).to_have_text("floor idle")
            expect(group.locator("button.talk")).to_have_attribute("aria-pressed", "false")
            expect(pg.locator("#log")).to_contain_text("north: disp1 talks")
            group_name = group.get_attribute("data-flow")
            assert group_name is not None
            pg.evaluate(
                "name => fetch(`/api/flows/${encodeURIComponent(name)}/commands`, {method: 'POST',"
                " headers: {'content-type': 'application/json'},"
                " body: JSON.stringify({command: 'end', args: {}})})",
                group_name,
            )
            expect(pg.locator("#ptt")).to_contain_text("none open")

            # An emergency call: a blinking banner on the console until a dispatcher
            # acknowledges it; then everyone sees who did.
            pg.click(tile(pg, "unit4"))
            pg.fill("#phone-number", "112")
            pg.click("#phone-dial")
            alarm = pg.locator("#alarms .alarm.unacked")
            expect(alarm).to_contain_text("EMERGENCY — unit4")
            alarm.locator('button[data-action="ack"]').click()
            expect(pg.locator("#alarms .alarm.acked")).to_contain_text("Acknowledged by disp1")
            expect(pg.locator("#log")).to_contain_text("disp1 acknowledged the emergency")
            # The log speaks the dispatcher's language; the engine's events stay in the trace.
            log = pg.locator("#log")
            expect(log).to_contain_text("emergency inbound 1 started — caller: unit4")
            expect(log).to_contain_text("unit1's call was answered")
            expect(log).not_to_contain_text("epoch")
            expect(log).not_to_contain_text("None")

            # The API docs on an isolated network: every request to another host fails.
            outside: list[str] = []

            def local_only(route: sync_api.Route) -> None:
                if route.request.url.startswith(centre.base):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            pg.route("**/*", local_only)
            pg.goto(f"{centre.base}/docs")
            expect(pg.locator(".swagger-ui .info .title")).to_contain_text("Baton")
            expect(pg.locator(".opblock-summary-path").first).to_be_visible()
            assert outside == []
            assert errors == [], errors
        finally:
            browser.close()


def test_the_console_over_https_logs_in_with_a_secure_cookie(tmp_path: Path) -> None:
    """``[api.tls]`` with a certificate made here: Chromium loads the console over HTTPS, logs
    in, and the session cookie it holds is Secure (and HttpOnly), so it never goes out over
    plain HTTP; the live event stream runs over wss:// (docs/service.md, HTTPS)."""
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    api = {"tls": {"certificate": str(cert), "key": str(key)}}
    with serve(tmp_path, api=api) as s, sync_api.sync_playwright() as p:
        assert s.base.startswith("https://")
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # The certificate is self-signed: the test trusts it, as an operator would.
            context = browser.new_context(ignore_https_errors=True)
            pg = context.new_page()
            pg.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            login(pg, s.base, "disp1", "disp1-pw")  # "live": the stream is up over wss://
            assert pg.url.startswith("https://127.0.0.1:")
            (cookie,) = [c for c in context.cookies() if c["name"] == "baton_session"]
            assert cookie["secure"] is True and cookie["httpOnly"] is True
            assert errors == [], errors
        finally:
            browser.close()


def test_a_supervisor_sees_a_failed_recording_and_acknowledges_it(tmp_path: Path) -> None:
    expect = sync_api.expect
    (tmp_path / "recordings").write_text("a file where the recordings folder should be\n")
    with (
        serve(tmp_path, sim={"answer_after": 0.3}) as s,
        sync_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            login(pg, s.base, "sup1", "sup1-pw")
            # unit1 calls disp1: a position's call, which the policy records — and cannot.
            pg.click(tile(pg, "unit1"))
            pg.fill("#phone-number", "2001")
            pg.click("#phone-dial")
            alarm = pg.locator("#alarms .alarm.fault")
            expect(alarm).to_contain_text("Recording of disp1's call failed: it could not start")
            expect(pg.locator("#log")).to_contain_text("Recording of disp1's call failed")
            alarm.locator('button[data-action="ack"]').click()
            expect(pg.locator("#alarms .alarm.fault")).to_have_count(0)
            expect(pg.locator("#log")).to_contain_text("sup1 acknowledged alarm#1")
            assert errors == [], errors
        finally:
            browser.close()


def test_an_admin_adds_and_removes_users_and_groups_from_the_console(tmp_path: Path) -> None:
    users = [
        *config_data(tmp_path)["users"],
        {"id": "adm1", "password": "adm1-pw", "role": "admin"},
    ]
    with (
        serve(tmp_path, users=users, sim={"answer_after": 0.3}) as server,
        sync_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            expect = sync_api.expect
            login(pg, server.base, "adm1", "adm1-pw")
            expect(pg.locator("#directory-panel")).to_be_visible()
            pg.fill("#dir-user-id", "unit9")
            pg.fill("#dir-user-name", "Engine 9")
            pg.fill("#dir-user-number", "1009")
            pg.fill("#dir-user-password", "unit9-pw")
            pg.select_option("#dir-user-role", "field")
            pg.click("#dir-user-add")
            expect(pg.locator("#status")).to_have_text("Engine 9 added")
            expect(pg.locator('#dir-users tr[data-user="unit9"]')).to_contain_text("1009")
            expect(pg.locator(tile(pg, "unit9"))).to_be_visible()  # in the grid at once
            pg.fill("#dir-group-id", "south")
            pg.fill("#dir-group-members", "unit1, unit9")
            pg.select_option("#dir-group-mode", "ptt")
            pg.click("#dir-group-add")
            expect(pg.locator('#dir-groups tr[data-group="south"]')).to_contain_text("push-to-talk")
            # A refusal says why, in words.
            pg.fill("#dir-user-id", "unit1")
            pg.fill("#dir-user-password", "x")
            pg.click("#dir-user-add")
            expect(pg.locator("#status")).to_contain_text("exists already")
            pg.click('#dir-users tr[data-user="unit9"] .dir-remove')
            expect(pg.locator("#status")).to_have_text("Engine 9 removed")
            expect(pg.locator('#dir-users tr[data-user="unit9"]')).to_have_count(0)
            expect(pg.locator('#dir-groups tr[data-group="south"]')).not_to_contain_text("unit9")
            # A dispatcher sees no directory panel.
            pg.click("#logout")
            login(pg, server.base, "disp1", "disp1-pw")
            expect(pg.locator("#directory-panel")).to_be_hidden()
            assert errors == [], errors
        finally:
            browser.close()
