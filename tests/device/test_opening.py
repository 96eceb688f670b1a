"""The fallback rule when the sound card opens (device/sound/opening.py): what was named
opens or is an error naming it; only ALSA's ``default`` falls back.  The real cards are
opened in test_app.py (ALSA's null device, a missing card); here the rule itself, over an
``open_loop`` that fails as AudioLoop.start does."""

from __future__ import annotations

import pytest

from device.errors import DeviceError
from device.sound.audio import AudioConfig
from device.sound.opening import open_with_fallbacks


def failing(*kinds: str):
    """An open_loop that fails once per kind ("capture"/"playback"), then opens."""
    calls: list[tuple[AudioConfig, object]] = []
    left = list(kinds)

    def open_loop(cfg: AudioConfig, src: object) -> str:
        calls.append((cfg, src))
        if left:
            err = DeviceError(f"cannot open {left[0]} device {cfg.playback_device!r}")
            err.pcm_kind = left.pop(0)
            raise err
        return "loop"

    return open_loop, calls


def test_a_missing_default_capture_plays_silence_and_says_no_line_in():
    open_loop, calls = failing("capture")
    loop, note = open_with_fallbacks(open_loop, AudioConfig(), "line", "silence",
                                     fallback="null")
    assert (loop, note) == ("loop", "no line-in")
    assert [src for _, src in calls] == ["line", "silence"]


def test_no_card_at_all_plays_into_null_paced_by_the_clock():
    open_loop, calls = failing("playback", "capture")
    loop, note = open_with_fallbacks(open_loop, AudioConfig(), "line", "silence",
                                     fallback="null")
    assert (loop, note) == ("loop", "no sound card")  # "no sound card" says more
    cfg, src = calls[-1]
    assert (cfg.playback_device, cfg.pacing, src) == ("null", "clock", "silence")


def test_a_named_capture_device_is_an_error_naming_its_key():
    open_loop, _ = failing("capture")
    with pytest.raises(DeviceError, match=r"\[audio\] capture_device"):
        open_with_fallbacks(open_loop, AudioConfig(capture_device="hw:9"), "line", "silence",
                            fallback="null")


@pytest.mark.parametrize("playback, fallback", [("hw:9", "null"), ("default", "fail")])
def test_a_named_playback_device_or_fallback_fail_is_an_error(playback, fallback):
    open_loop, calls = failing("playback")
    with pytest.raises(DeviceError, match="cannot open playback"):
        open_with_fallbacks(open_loop, AudioConfig(playback_device=playback), "line",
                            "silence", fallback=fallback)
    assert len(calls) == 1


@pytest.mark.parametrize("kinds, message", [
    (("capture", "playback", "playback"), "cannot open playback device 'null'"),
    (("capture", "capture", "capture"), "no audio device could be opened"),
], ids=["null-fails-too", "capture-keeps-failing"])
def test_a_card_that_fails_after_its_fallbacks_is_one_error(kinds, message):
    open_loop, calls = failing(*kinds)
    with pytest.raises(DeviceError, match=message):
        open_with_fallbacks(open_loop, AudioConfig(), "line", "silence", fallback="null")
    assert len(calls) == 3
