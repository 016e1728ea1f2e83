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


@flow()
async def record_on(s: Session, a: User, path: str) -> None:
    await s.claim(a)
    await s.dial(a)
    await s.record(a, path)
    await s.sleep(100)


async def test_closing_the_switch_finishes_the_recordings_still_running(tmp_path: Path) -> None:
    # A service stopping with a call recorded: the file must be a WAV as long as it ran, not
    # an empty file the voice logger would report as a failed recording.
    w = World("a")
    w.sim.write_recordings = True
    path = tmp_path / "a.wav"
    f = w.start(record_on, w["a"], str(path))
    await w.run(2)
    await w.sim.close()
    assert 0 < len(read_wav(path)) <= 2 * 8000  # answered after a second, recorded since
    assert not w.sim.recordings
    f.cancel()


async def test_a_recording_is_a_wav_while_it_runs(tmp_path: Path) -> None:
    # A service killed while recording leaves a file the next start can checksum (docs/service.md,
    # "After a crash"), not an empty one it must report as failed.
    w = World("a")
    w.sim.write_recordings = True
    path = tmp_path / "a.wav"
    f = w.start(record_on, w["a"], str(path))
    await w.run(3)
    assert len(read_wav(path)) == 0
    f.cancel()
    await w.run(2)
    assert len(read_wav(path)) > 0
