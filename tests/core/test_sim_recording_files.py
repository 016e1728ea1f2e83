"""The sim's recordings as real files (``SimSwitch.write_recordings``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.core import Session, SwitchFailed, User, flow
from baton.switch.media.wav import read_wav
from baton.testing import World


@flow()
async def talk_recorded(s: Session, a: User, path: str) -> float:
    await s.claim(a)
    await s.dial(a)
    rec = await s.record(a, path)
    await s.sleep(3)
    await s.stop_recording(rec)
    return rec.seconds


async def test_a_recording_is_a_wav_as_long_as_it_ran(tmp_path: Path) -> None:
    w = World("a")
    w.sim.write_recordings = True
    path = tmp_path / "a.wav"
    f = w.start(talk_recorded, w["a"], str(path))
    assert await f.result() == pytest.approx(3.0)
    pcm = read_wav(path)
    assert len(pcm) == 3 * 8000
    assert not pcm.any()


async def test_an_unwritable_path_fails_the_record_command(tmp_path: Path) -> None:
    w = World("a")
    w.sim.write_recordings = True
    f = w.start(talk_recorded, w["a"], str(tmp_path / "no-such-folder" / "a.wav"))
    with pytest.raises(SwitchFailed, match="cannot record"):
        await f.result()


async def test_without_the_switch_no_file_is_written(tmp_path: Path) -> None:
    w = World("a")
    f = w.start(talk_recorded, w["a"], str(tmp_path / "a.wav"))
    await f.result()
    assert not (tmp_path / "a.wav").exists()
