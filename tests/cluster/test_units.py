"""The cluster's parts without processes: fencing in the store (two services on one SQLite
database, the older epoch refused), registrations moving between registrars, Record-Route in
dialog-creating responses, the edge's routing files, and the shard's configuration."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from _rigs.sip import U, rig, wait_until
from baton.core import Priority, User
from baton.flows import call, emergency_call, ptt_group
from baton.service.callers import Caller, caller_from
from baton.service.cli import serve_main
from baton.service.cluster.config import load_shard_config
from baton.service.cluster.edge import _write, render, sip_uri
from baton.service.cluster.fence import DbFence, epochs, fences
from baton.service.cluster.restore import Restorer
from baton.service.config import ConfigError
from baton.service.runtime import Service
from baton.service.store.journal import Fenced
from baton.service.store.tables import callinfo_records, flow_records, journal, runs
from baton.switch.sip.config import SipConfigError, parse_sip_config
from baton.switch.sip.message import make_response, parse_message
from baton.switch.sip.peers import peer_proof
from baton.switch.sip.registrar import Registrar
from baton.switch.sip.switch import SipSwitch
from service.helpers import FAST_HASHER, eventually, make_config

pytestmark = [pytest.mark.realtime]


async def test_an_older_epoch_writes_nothing_once_a_newer_one_took_over(tmp_path: Path) -> None:
    """Service A (epoch 5) runs; service B takes the tenant (epoch 9) on the same database: A's
    next journal batch is refused, its writer stops, A's run's records are closed with
    ``failover`` by B, and no row of A's run lands after B's mark."""
    config = make_config(tmp_path)
    a = Service(config, hasher=FAST_HASHER, fencing=DbFence("t", "shard-a", 5))
    await a.start()
    m = a.manager
    first = m.start(call, m.user("disp1"), m.user("unit1"))
    await first.wait()
    await a.journal.sync()
    b = Service(config, hasher=FAST_HASHER, fencing=DbFence("t", "shard-b", 9))
    await b.start()
    try:
        # A goes on as if nothing happened: its next write is refused.
        m.start(call, m.user("disp2"), m.user("unit2"))
        with pytest.raises(Exception, match="fenced"):
            await a.journal.sync(within=5)
        assert isinstance(a.journal.fenced, Fenced)
        await b.journal.sync()
        async with b.store.read() as conn:
            taken = (await conn.execute(sa.select(epochs).order_by(epochs.c.epoch))).all()
            assert [(r.shard, r.epoch) for r in taken] == [("shard-a", 5), ("shard-b", 9)]
            late = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(journal)
                .where(journal.c.run_id == a.run_id, journal.c.id > taken[1].journal_mark)
            )
            assert late == 0
            reasons = (
                await conn.execute(
                    sa.select(callinfo_records.c.end_reason).where(
                        callinfo_records.c.run_id == a.run_id
                    )
                )
            ).all()
            assert reasons and all(r == ("failover",) for r in reasons)
            assert await conn.scalar(sa.select(runs.c.end_reason).where(runs.c.id == a.run_id)) == (
                "crashed"
            )
            assert await conn.scalar(sa.select(fences.c.epoch)) == 9
    finally:
        await b.stop()
        await a.stop()


async def test_a_stale_epoch_cannot_take_over_and_a_lost_lease_writes_nothing(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    newer = Service(config, hasher=FAST_HASHER, fencing=DbFence("t", "shard-b", 9))
    await newer.start()
    await newer.stop()
    older = Service(config, hasher=FAST_HASHER, fencing=DbFence("t", "shard-a", 5))
    with pytest.raises(Fenced):
        await older.start()
    await older.stop()
    valid = True
    holder = Service(
        config, hasher=FAST_HASHER, fencing=DbFence("t", "shard-c", 12, valid=lambda: valid)
    )
    await holder.start()
    try:
        await holder.journal.sync()
        valid = False  # the lease ran out: refused before the store is even asked
        holder.journal.audit(
            principal=None, role=None, action="x", target=None, outcome="ok", details=None
        )
        with pytest.raises(Exception, match="fenced"):
            await holder.journal.sync(within=5)
    finally:
        await holder.stop()


def test_registrations_move_from_one_registrar_to_another() -> None:
    def secret(user: str) -> object:
        return object() if user in ("alice", "bob") else None

    old = Registrar(authenticator=None, lookup=secret)
    new = Registrar(authenticator=None, lookup=secret)
    old.restore(
        [
            {"aor": "alice", "contact": "<sip:alice-1@127.0.0.1:5064>", "expires_in": 100},
            {"aor": "bob", "contact": "<sip:bob@127.0.0.1:5066>", "expires_in": 5},
        ],
        1000.0,
    )
    old.add_static("bob", "sip:bob@127.0.0.1:7000")
    snapshot = old.snapshot(1000.0)
    assert [(e["aor"], e["expires_in"]) for e in snapshot] == [("alice", 100), ("bob", 5)]
    # Restored 10 s later elsewhere: bob's has expired meanwhile; statics are not carried.
    assert (
        new.restore(
            [*snapshot, {"aor": "mallory", "contact": "<sip:m@h>", "expires_in": 9}], 50.0, age=10
        )
        == 1
    )
    (alice,) = new.contacts("alice", 50.0)
    assert str(alice.uri) == "sip:alice-1@127.0.0.1:5064" and alice.expires_in(50.0) == 90
    assert new.contacts("bob", 50.0) == []
    assert new.restore(snapshot, 50.0, age=10) == 0  # the same binding is not added twice


def test_dialog_creating_responses_carry_the_record_route() -> None:
    invite = parse_message(
        b"INVITE sip:2102@10.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK2\r\n"
        b"Record-Route: <sip:10.0.0.9;lr;ftag=a>\r\n"
        b"Record-Route: <sip:10.0.0.8;lr>\r\n"
        b"From: <sip:a@x>;tag=a\r\nTo: <sip:2102@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        b"Contact: <sip:a@10.0.0.2:5070>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    ok = make_response(invite, 200, to_tag="b")
    assert ok.headers.get_all("Record-Route") == ["<sip:10.0.0.9;lr;ftag=a>", "<sip:10.0.0.8;lr>"]
    assert make_response(invite, 180, to_tag="b").headers.get_all("Record-Route")
    assert make_response(invite, 486, to_tag="b").headers.get_all("Record-Route") == []
    assert make_response(invite, 100).headers.get_all("Record-Route") == []


def test_each_routing_file_written_is_newer_by_a_whole_second(tmp_path: Path) -> None:
    # Kamailio's db_text reloads the tenants table only if st_mtime, in seconds, moved on:
    # the edge sync writing twice in one second (shards starting) left Kamailio on the first.
    path = tmp_path / "tenants"
    stamps = []
    for text in ("a", "b", "c"):
        _write(path, text)
        stamps.append(int(path.stat().st_mtime))
    assert path.read_text() == "c"
    assert stamps[0] < stamps[1] < stamps[2]


def test_the_edge_lists_the_holder_first_then_the_standbys() -> None:
    holders = {
        "acme": {"shard": "s1", "sip": ["udp:10.0.0.1:5100"], "names": ["alice", "2001"]},
    }
    members = {
        "acme": {
            "s1": {"sip": ["udp:10.0.0.1:5100"], "names": ["alice", "2001"]},
            "s2": {"sip": ["tcp:10.0.0.2:5100"], "names": ["alice", "2001"]},
        },
        "bravo": {"s2": {"sip": ["udp:10.0.0.2:5101"], "names": ["bob"]}},
    }
    ds, table, sets = render(holders, members)
    assert sets == {"acme": 1, "bravo": 2}
    lines = [line for line in ds.splitlines() if not line.startswith("#")]
    assert lines == [
        "1 sip:10.0.0.1:5100 0 10 shard=s1",
        "1 sip:10.0.0.2:5100;transport=tcp 0 1 shard=s2",
        "2 sip:10.0.0.2:5101 0 1 shard=s2",  # no holder: its standbys, tried in turn
    ]
    assert table.splitlines()[1:] == ["alice:0:1:1:0", "2001:0:1:1:0", "bob:0:1:2:0"]
    assert sip_uri("tls:10.0.0.3:5061") == "sips:10.0.0.3:5061"


def test_a_shard_file_names_its_tenants_files(tmp_path: Path) -> None:
    (tmp_path / "acme.toml").write_text(
        'tenant = "acme"\n[sip]\nlisten = ["udp:127.0.0.1:5060"]\n'
        '[[users]]\nid = "a"\npassword = "p"\n'
    )
    (tmp_path / "other.toml").write_text('[[users]]\nid = "b"\npassword = "p"\n')
    shard = tmp_path / "shard.toml"
    shard.write_text(
        '[cluster]\nname = "s1"\n'
        '[cluster.tenants.acme]\nconfig = "acme.toml"\nsip = "udp:127.0.0.1:5170"\n'
        'api = "127.0.0.1:8170"\nrtp_ports = "31000-31099"\n'
    )
    config = load_shard_config(shard)
    acme = config.tenants["acme"]
    assert acme.tenant == "acme" and acme.sip["listen"] == ["udp:127.0.0.1:5170"]
    assert acme.api.listen == "127.0.0.1:8170" and acme.sip["rtp_ports"] == "31000-31099"
    assert config.cluster.ttl == 3.0 and config.cluster.etcd == ("127.0.0.1:2379",)
    shard.write_text(
        '[cluster]\nname = "s1"\nttl = 0.1\n[cluster.tenants.bravo]\nconfig = "other.toml"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_shard_config(shard)
    assert any("cluster.ttl" in p for p in err.value.problems)
    shard.write_text('[cluster]\nname = "s1"\n[cluster.tenants.bravo]\nconfig = "other.toml"\n')
    with pytest.raises(ConfigError) as err:
        load_shard_config(shard)
    assert any("is tenant 'default'" in p for p in err.value.problems)


def test_two_tenants_of_a_shard_on_one_address_fail_the_check(tmp_path: Path) -> None:
    """A shard serves its standby tenant only after a fail-over: an address it shares with
    the shard's other tenant would make that fail-over fail, so --check says so."""
    for tenant in ("acme", "bravo"):
        (tmp_path / f"{tenant}.toml").write_text(
            f'tenant = "{tenant}"\nswitch = "sip"\ndatabase = "{tenant}.db"\n'
            f'[[users]]\nid = "{tenant}1"\npassword = "p"\n'
        )
    shard = tmp_path / "shard.toml"

    def placements(bravo_sip: str, bravo_api: str) -> str:
        return (
            '[cluster]\nname = "s1"\n'
            '[cluster.tenants.acme]\nconfig = "acme.toml"\nsip = "udp:127.0.0.1:5170"\n'
            'api = "127.0.0.1:8170"\n'
            f'[cluster.tenants.bravo]\nconfig = "bravo.toml"\nrole = "standby"\n'
            f'sip = "{bravo_sip}"\napi = "{bravo_api}"\n'
        )

    shard.write_text(placements("udp:127.0.0.1:5171", "127.0.0.1:8171"))
    assert set(load_shard_config(shard).tenants) == {"acme", "bravo"}
    # Without an api in their placements the shard serves neither tenant's API: no clash.
    shard.write_text(
        placements("udp:127.0.0.1:5171", "127.0.0.1:8171").replace('api = "127.0.0.1:817', "#")
    )
    assert set(load_shard_config(shard).tenants) == {"acme", "bravo"}
    shard.write_text(placements("tcp:127.0.0.1:5170", "127.0.0.1:8171"))  # UDP and TCP: fine
    assert set(load_shard_config(shard).tenants) == {"acme", "bravo"}
    shard.write_text(placements("udp:127.0.0.1:5170", "127.0.0.1:8170"))
    with pytest.raises(ConfigError) as err:
        load_shard_config(shard)
    assert err.value.problems == [
        "cluster.tenants.bravo.sip: udp:127.0.0.1:5170 is also tenant acme's "
        "(udp:127.0.0.1:5170): a shard serving both, after a fail-over, could not bind it",
        "cluster.tenants.bravo.api: 127.0.0.1:8170 is also tenant acme's "
        "(127.0.0.1:8170): a shard serving both, after a fail-over, could not bind it",
    ]
    shard.write_text(placements("ws:127.0.0.1:8170", "127.0.0.1:8171"))  # the API's TCP port
    with pytest.raises(ConfigError) as err:
        load_shard_config(shard)
    assert err.value.problems[0].startswith(
        "cluster.tenants.bravo.sip: ws:127.0.0.1:8170 is also tenant acme's (127.0.0.1:8170)"
    )


def test_a_tenants_role_table_extending_its_builtin_survives_the_placement(
    tmp_path: Path,
) -> None:
    # The shard re-reads the tenant's file with its own addresses: a `[roles.dispatcher]`
    # table that only adds a permission must keep the built-in's cap, position and scope.
    (tmp_path / "acme.toml").write_text(
        'tenant = "acme"\n[roles.dispatcher]\npermissions = ["escort"]\n'
        '[[users]]\nid = "d"\npassword = "p"\nrole = "dispatcher"\n'
    )
    shard = tmp_path / "shard.toml"
    shard.write_text(
        '[cluster]\nname = "s1"\n[cluster.tenants.acme]\nconfig = "acme.toml"\n'
        'api = "127.0.0.1:8170"\n'
    )
    acme = load_shard_config(shard).tenants["acme"]
    assert acme.api.listen == "127.0.0.1:8170"
    role = acme.all_roles["dispatcher"]
    assert "escort" in role.permissions and "call" in role.permissions
    assert role.max_priority == Priority.EMERGENCY and role.position
    assert role.effective_scope == "centre"


async def test_a_standby_raises_emergencies_redials_keep_lines_and_reforms_ptt(
    tmp_path: Path,
) -> None:
    """Shard A's run had an emergency, a two-party call of a keep line (disp1) and a PTT group
    open when B took the tenant over: B's restorer raises the emergency again, dials disp1's
    line and forms the PTT group again, each started by ``failover``."""
    config = make_config(tmp_path)
    fence_a = DbFence("t", "shard-a", 5)
    a = Service(config, hasher=FAST_HASHER, fencing=fence_a)
    await a.start()
    await Restorer(a, fence_a).after_start()  # notes A's run against its epoch
    m = a.manager
    calling = m.start(call, m.user("disp1"), m.user("unit1"))
    await calling.wait()
    m.start(emergency_call, m.user("disp2"), m.user("unit3"))
    m.start(ptt_group, [m.user("unit2"), m.user("unit4")])
    await eventually(lambda: m.state_of(m.user("unit3")) == "talking", within=10)
    await eventually(lambda: m.leg_of(m.user("unit4")) is not None, within=10)
    await a.journal.sync()
    fence = DbFence("t", "shard-b", 9)
    b = Service(config, hasher=FAST_HASHER, fencing=fence)
    await b.start()
    restorer = Restorer(b, fence)
    try:
        await restorer.after_start()
        names = {
            f.split("#")[0] for f in [*restorer.reraised, *restorer.redialled, *restorer.reformed]
        }
        assert names == {"emergency_call", "keep_line", "ptt_group"}
        mb = b.manager
        await eventually(lambda: mb.leg_of(mb.user("disp1")) is not None, within=10)
        await b.journal.sync()
        async with b.store.read() as conn:
            started = (
                await conn.execute(
                    sa.select(flow_records.c.name).where(
                        flow_records.c.run_id == b.run_id, flow_records.c.started_by == "failover"
                    )
                )
            ).scalars()
            assert set(started) == {"emergency_call", "keep_line", "ptt_group"}
    finally:
        restorer.close()
        await b.stop()
        await a.stop()


def test_peer_lines_accept_only_the_edges_signature() -> None:
    """``[sip.peers]``: a request is a peer call only from the edge's address with the right
    proof over its Call-ID and numbers; lines are handed out in turn, none when all are busy."""
    config = parse_sip_config(
        {"peers": {"edge": "udp:127.0.0.1:5060", "secret": "s" * 20, "numbers": ["3"], "lines": 2}}
    )
    switch = SipSwitch(config, [])
    peers = switch.peers
    assert peers is not None and switch.peer_lines == ("peer-1", "peer-2")
    assert switch.peer_numbers == ("3",)
    assert peers.from_edge("127.0.0.1", 5060) and not peers.from_edge("127.0.0.1", 5061)
    proof = peer_proof("s" * 20, "c1@x", "2101", "3102")

    def invite(header: str | None, call_id: str = "c1@x") -> Any:
        extra = f"X-Baton-Peer: {header}\r\n" if header is not None else ""
        raw = (
            "INVITE sip:3102@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            "From: <sip:2101@127.0.0.1>;tag=a\r\nTo: <sip:3102@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        return parse_message(raw.encode())

    assert peers.proven(invite(proof)) is True
    assert peers.proven(invite(proof, call_id="c2@x")) is False  # another call: no replay
    assert peers.proven(invite("0" * 64)) is False
    assert peers.proven(invite(None)) is None  # a phone's call through the edge
    assert peers.free(set()) == "peer-1" and peers.free(set()) == "peer-2"
    assert peers.free({"peer-1"}) == "peer-2" and peers.free({"peer-1", "peer-2"}) is None
    # The lines are the switch's users, but no name a digest or a REGISTER could use.
    switch.dial_peer("peer-1", "3102")
    assert [b.contact_text for b in switch.registrar.contacts("peer-1", 0)] == [
        "<sip:3102@127.0.0.1:5060>"
    ]
    assert switch._directory.secret_of("peer-1") is None
    # Over TCP the edge's connections come from ports of its choosing: its host is the test.
    tcp = parse_sip_config(
        {"peers": {"edge": "tcp:127.0.0.1:5060", "secret": "s" * 20, "numbers": ["3"]}}
    )
    tcp_peers = SipSwitch(tcp, []).peers
    assert tcp_peers is not None and tcp_peers.from_edge("127.0.0.1", 40000)
    assert not tcp_peers.from_edge("127.0.0.2", 5060)
    with pytest.raises(SipConfigError) as bad:
        parse_sip_config({"peers": {"edge": "edge.example", "secret": "short", "numbers": []}})
    assert len(bad.value.problems) == 3


@pytest.mark.realtime
async def test_a_peer_call_names_the_calling_tenant() -> None:
    """A call to another tenant tells it this tenant's name (``X-Baton-Tenant``, from the
    service's ``tenant``); a proven call from the edge passes the name it carries on to the core
    with the caller's From, so the line's caller is shown as that tenant's (docs/cluster.md)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as edge:
        edge.bind(("127.0.0.1", 0))
        edge.setblocking(False)
        port = edge.getsockname()[1]
        peers = {"edge": f"udp:127.0.0.1:{port}", "secret": "s" * 20, "numbers": ["3"],
                 "lines": 2, "tenant": "acme"}  # fmt: skip
        async with rig([U("unit1", ("2101",))], sip={"peers": peers}, router=None) as r:
            for line in ("peer-1", "peer-2"):
                r.manager.add_user(User(line))
            loop = asyncio.get_running_loop()
            # Out: unit1 calls bravo's 3102 on peer-1; the INVITE to the edge names acme.
            r.switch.dial_peer("peer-1", "3102")
            await r.switch.originate("out-1", "peer-1", caller="unit1")
            async with asyncio.timeout(5):
                out = parse_message(await loop.sock_recv(edge, 65536))
            assert out.headers.get("X-Baton-Tenant") == "acme"
            assert str(out.from_).startswith('"unit1" <sip:2101@')
            # In: bravo's 3101 calls 2101 through the edge, signed; the core sees its tenant.
            call_id = "in-1@edge"
            proof = peer_proof("s" * 20, call_id, "3101", "2101")
            invite = (
                f"INVITE sip:2101@127.0.0.1:{r.udp_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-in1;rport\r\n"
                'Max-Forwards: 70\r\nFrom: "b-unit1" <sip:3101@127.0.0.1>;tag=b\r\n'
                f"To: <sip:2101@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:3101@127.0.0.1:{port}>\r\nX-Baton-Peer: {proof}\r\n"
                "X-Baton-Tenant: bravo\r\nContent-Length: 0\r\n\r\n"
            )
            await loop.sock_sendto(edge, invite.encode(), ("127.0.0.1", r.udp_port))
            await wait_until(lambda: bool(r.inbound), 5)
            (call,) = r.inbound
            assert call.user == "peer-2"  # peer-1 is busy with the call out
            assert call.headers["X-Baton-Tenant"] == "bravo"
            assert caller_from(call.headers) == Caller("3101", "b-unit1", "bravo")
    # A tenant's name is checked like the service's ids.
    with pytest.raises(SipConfigError):
        parse_sip_config({"peers": {**peers, "tenant": "no spaces"}})


def test_a_shard_files_problems_read_like_a_centre_files(tmp_path: Path) -> None:
    """docs/service.md, Configuration: an unknown key is reported as one (not pydantic's
    "Extra inputs are not permitted"), and a tenant file's problem names that file, which is
    where it must be fixed."""
    (tmp_path / "acme.toml").write_text('tenant = "acme"\n[[users]]\nid = "a"\npassword = "p"\n')
    shard = tmp_path / "shard.toml"
    shard.write_text(
        '[cluster]\nname = "s1"\nttls = 3\n'
        '[cluster.tenants.acme]\nconfig = "acme.toml"\napi = "10.0.1.11:8100"\npublic = true\n'
    )
    with pytest.raises(ConfigError) as err:
        load_shard_config(shard)
    assert sorted(err.value.problems) == [
        "cluster.tenants.acme.public: unknown key (misspelt?)",
        "cluster.ttls: unknown key (misspelt?)",
    ]
    shard.write_text(
        '[cluster]\nname = "s1"\n[cluster.tenants.acme]\nconfig = "acme.toml"\n'
        'api = "10.0.1.11:8100"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_shard_config(shard)
    (problem,) = err.value.problems
    assert problem.startswith("cluster.tenants.acme (acme.toml): api: listen '10.0.1.11:8100'")


def test_a_shards_check_checks_each_tenant_as_a_centres_check_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/cluster.md: `baton serve --config shard.toml --check` validates every tenant file.
    A tenant whose own `--check` fails (a plug-in that does not import, a misspelt permission,
    an unknown [sip] key) once passed the shard's — to fail only when the shard served it,
    perhaps first at a fail-over."""
    (tmp_path / "acme.toml").write_text(
        'tenant = "acme"\n[sip]\nrealm = "acme"\nbogus = 1\n'
        '[roles.dispatcher]\npermissions = ["barge-in"]\n[flows]\nplugins = ["no_such_mod"]\n'
        '[[users]]\nid = "a"\npassword = "p"\nrole = "dispatcher"\n'
    )
    shard = tmp_path / "shard.toml"
    shard.write_text(
        '[cluster]\nname = "s1"\n'
        '[cluster.tenants.acme]\nconfig = "acme.toml"\nsip = "udp:127.0.0.1:5170"\n'
    )
    acme = tmp_path / "acme.toml"
    assert serve_main(["--config", str(acme), "--check"]) == 2
    alone = capsys.readouterr().err
    assert serve_main(["--config", str(shard), "--check"]) == 2
    err = capsys.readouterr().err
    for key in ("flows.plugins[0]", "roles.dispatcher.permissions[0]", "sip.bogus"):
        assert key in alone
        assert f"cluster.tenants.acme (acme.toml): {key}" in err, err
    acme.write_text(acme.read_text().replace("bogus = 1\n", "").replace("barge-in", "barge_in"))
    acme.write_text(acme.read_text().replace('"no_such_mod"', ""))
    assert serve_main(["--config", str(shard), "--check"]) == 0
    assert "ok (shard s1, tenants acme)" in capsys.readouterr().out


def test_a_shard_refuses_the_single_centre_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--listen, --database, --sim and --activity override one centre's file; a shard file
    names each tenant's addresses in its placement and each tenant's database in its file, so
    they were silently ignored there (a shard 'moved' with --listen kept its old addresses)."""
    (tmp_path / "acme.toml").write_text('tenant = "acme"\n[[users]]\nid = "a"\npassword = "p"\n')
    shard = tmp_path / "shard.toml"
    shard.write_text('[cluster]\nname = "s1"\n[cluster.tenants.acme]\nconfig = "acme.toml"\n')
    for flag in (["--listen", "127.0.0.1:9000"], ["--database", "x.db"], ["--sim"], ["--activity"]):
        assert serve_main(["--config", str(shard), "--check", *flag]) == 2
        err = capsys.readouterr().err
        assert flag[0] in err and "[cluster.tenants" in err, err
    assert serve_main(["--config", str(shard), "--check"]) == 0


def test_two_tenants_of_a_shard_on_one_database_fail_the_check(tmp_path: Path) -> None:
    """docs/cluster.md, Tenants: each tenant needs its own database (a run's crash recovery
    closes the open records of every dead run it finds there). Two tenant files that name the
    same one — or both leave `database` out, and so share var/baton.db — fail the check."""
    for tenant in ("acme", "bravo"):
        (tmp_path / f"{tenant}.toml").write_text(
            f'tenant = "{tenant}"\n[[users]]\nid = "{tenant}1"\npassword = "p"\n'
        )
    shard = tmp_path / "shard.toml"
    shard.write_text(
        '[cluster]\nname = "s1"\n[cluster.tenants.acme]\nconfig = "acme.toml"\n'
        '[cluster.tenants.bravo]\nconfig = "bravo.toml"\nrole = "standby"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_shard_config(shard)
    (problem,) = err.value.problems
    assert problem.startswith("cluster.tenants.bravo (bravo.toml): database ")
    assert "is also tenant acme's" in problem and "its own database" in problem
    for tenant in ("acme", "bravo"):
        path = tmp_path / f"{tenant}.toml"
        path.write_text(f'database = "{tenant}.db"\n' + path.read_text())
    assert set(load_shard_config(shard).tenants) == {"acme", "bravo"}
