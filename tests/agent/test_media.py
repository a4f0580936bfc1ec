"""The media path: inbound resampling and the paced playout track (DTX, early start, ptime)."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np
import pytest

from rtc_agent.media.inbound import InboundAudio, append_event
from rtc_agent.media.playout import RTP_STEP, PlayoutTrack
from rtc_agent.media.playout_buffer import FRAME_BYTES


def stereo_frame(i: int, freq: float = 440.0) -> av.AudioFrame:
    t = (np.arange(960) + i * 960) / 48000
    mono = (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16",
                                       layout="stereo")
    frame.sample_rate = 48000
    frame.pts = i * 960
    return frame


def test_inbound_passes_each_frame_on_at_once_at_24khz_with_the_tone() -> None:
    inbound = InboundAudio()
    per_frame = [list(inbound.push(stereo_frame(i))) for i in range(50)]
    # Every 20 ms frame gives its 24 kHz samples at once (none held for a next frame),
    # bar the resampler's filter delay of a few samples at the start.
    assert all(len(out) == 1 for out in per_frame)
    chunks = [out[0] for out in per_frame]
    assert 900 <= len(chunks[0]) < 960
    assert all(len(c) == 960 for c in chunks[1:])
    pcm = np.frombuffer(b"".join(chunks[5:]), dtype=np.int16).astype(float)
    spectrum = np.abs(np.fft.rfft(pcm))
    peak_hz = np.argmax(spectrum) * 24000 / len(pcm)
    assert abs(peak_hz - 440) < 5


def test_append_event_is_valid_json() -> None:
    import base64
    import json

    event = json.loads(append_event(b"\x01\x02" * 480))
    assert event["type"] == "input_audio_buffer.append"
    assert base64.b64decode(event["audio"]) == b"\x01\x02" * 480


def decode(packets: list[av.Packet]) -> np.ndarray:
    codec = av.CodecContext.create("libopus", "r")
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = 48000
    out = []
    for p in packets:
        for frame in codec.decode(av.Packet(bytes(p))):
            out.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(out)


async def test_playout_paces_plays_and_accounts_items() -> None:
    started: list[str] = []
    finished: list[tuple[str, float]] = []
    track = PlayoutTrack(on_item_started=started.append,
                         on_item_finished=lambda i, ms: finished.append((i, ms)))
    tone = (np.sin(np.arange(24000 * 3 // 10) / 3.0) * 8000).astype(np.int16).tobytes()  # 300 ms
    track.enqueue("item_a", tone)
    track.end_item("item_a")
    packets = [await track.recv() for _ in range(25)]
    assert started == ["item_a"]
    assert finished == [("item_a", 300.0)]
    # RTP timestamps advance by one 20 ms frame at the 48 kHz clock.
    assert [p.pts for p in packets[:3]] == [0, RTP_STEP, 2 * RTP_STEP]
    pcm = decode(packets)
    loud = np.abs(pcm[: 48000 * 3 // 10]).mean()
    quiet = np.abs(pcm[48000 * 4 // 10 :]).mean()
    assert loud > 1000 and quiet < 50
    track.stop()


async def test_quiet_track_sends_dtx_packets_with_timestamps_on_the_clock() -> None:
    """Idle in DTX: one one-byte packet at once, then one every 400 ms, each stamped
    with the time it stands for (a gap in packets is a gap in RTP time)."""
    track = PlayoutTrack(dtx=True)
    first = await track.recv()
    second = await track.recv()
    assert len(bytes(first)) == 1 and len(bytes(second)) == 1
    assert second.pts - first.pts == 20 * RTP_STEP  # 400 ms on the 48 kHz clock
    assert decode([first, second]).size == 2 * 960  # any Opus decoder takes them
    track.stop()


async def test_by_default_a_quiet_track_sends_silence_every_frame() -> None:
    track = PlayoutTrack()
    packets = [await track.recv() for _ in range(3)]
    assert [p.pts for p in packets] == [0, RTP_STEP, 2 * RTP_STEP]
    assert all(len(bytes(p)) > 2 for p in packets)
    assert np.abs(decode(packets)).max() < 50
    track.stop()


async def test_a_reply_starts_when_its_audio_comes_not_at_the_next_tick() -> None:
    """In DTX, audio queued half-way between two ticks of a quiet track goes out at
    once, stamped with that moment; the rest of the reply is paced from there."""
    started: list[float] = []
    track = PlayoutTrack(on_item_started=lambda _item: started.append(time.monotonic()),
                         dtx=True)
    first = await track.recv()  # the quiet begins: a DTX packet, and the clock's origin
    origin = time.monotonic()
    # 5 ticks and a half later (the track ticks every 20 ms inside recv while quiet)
    queued_at: list[float] = []

    def queue_reply() -> None:
        queued_at.append(time.monotonic())
        track.enqueue("item_a", b"\x10\x27" * 2400)  # 100 ms of a constant level

    asyncio.get_running_loop().call_later(0.110, queue_reply)
    audio = [await track.recv() for _ in range(3)]
    stamped = (audio[0].pts - first.pts) / 48000 + origin
    # Off the 20 ms grid, at the moment the audio came (a tick would be 10 ms later)...
    assert 0 <= stamped - queued_at[0] < 0.005
    assert started and started[0] - queued_at[0] < 0.005  # `speaking` goes with it
    # ...and paced on from there.
    assert [p.pts - audio[0].pts for p in audio] == [0, RTP_STEP, 2 * RTP_STEP]
    assert track.early_starts == 1
    track.stop()


async def test_ten_ms_packets() -> None:
    track = PlayoutTrack(frame_ms=10, dtx=False)
    tone = (np.sin(np.arange(2400) / 3.0) * 8000).astype(np.int16).tobytes()  # 100 ms
    track.enqueue("item_a", tone)
    packets = [await track.recv() for _ in range(12)]
    assert [p.pts for p in packets[:3]] == [0, RTP_STEP // 2, RTP_STEP]
    pcm = decode(packets)
    assert pcm.size == 12 * 480
    assert np.abs(pcm[:4800]).mean() > 1000
    with pytest.raises(ValueError):
        PlayoutTrack(frame_ms=15)
    track.stop()


async def test_flush_reports_what_was_on_air_and_silences_next_frame() -> None:
    track = PlayoutTrack()
    track.enqueue("item_a", bytes(range(256)) * 375)  # 2 s of noise-like audio
    for _ in range(10):
        await track.recv()
    flushed = track.flush()
    assert flushed.item_id == "item_a" and flushed.sent_ms == pytest.approx(200.0)
    assert track.buffered_ms == 0
    assert track.current_item is None
    track.stop()


def test_buffer_is_bounded() -> None:
    track = PlayoutTrack(max_buffer_ms=1000)
    track.enqueue("a", bytes(FRAME_BYTES * 50))  # exactly 1 s
    track.enqueue("a", bytes(FRAME_BYTES))
    assert track.buffered_ms == pytest.approx(1000)
    assert track.dropped_ms == pytest.approx(20)
    track.stop()


async def test_loop_decoder_yields_mono_frames_that_inbound_resamples() -> None:
    import asyncio

    from aiortc.jitterbuffer import JitterFrame

    from rtc_agent.media.inbound import _LoopDecoder

    track = PlayoutTrack()  # a convenient Opus source: 24 kHz tone, 20 ms packets
    tone = (np.sin(np.arange(24000) * 2 * np.pi * 300 / 24000) * 8000).astype(np.int16)
    track.enqueue("a", tone.tobytes())
    packets = [await track.recv() for _ in range(50)]
    track.stop()
    q: asyncio.Queue = asyncio.Queue()
    decoder = _LoopDecoder(q)
    for p in packets:
        decoder.put((None, JitterFrame(data=bytes(p), timestamp=p.pts)))
    frames = [q.get_nowait() for _ in range(q.qsize())]
    assert len(frames) == 50
    assert all((f.sample_rate, f.layout.name, f.samples) == (48000, "mono", 960) for f in frames)
    inbound = InboundAudio()
    chunks = [c for f in frames for c in inbound.push(f)]
    assert 48 <= len(chunks) <= 50
    pcm = np.frombuffer(b"".join(chunks[5:]), np.int16).astype(float)
    peak_hz = np.argmax(np.abs(np.fft.rfft(pcm))) * 24000 / len(pcm)
    assert abs(peak_hz - 300) < 5
    # A corrupt packet is counted and dropped; the decoder goes on with the next one.
    decoder.put((None, JitterFrame(data=b"\xff\xff\xff", timestamp=0)))
    assert (decoder.decode_errors, q.qsize()) == (1, 0)
    decoder.put((None, JitterFrame(data=bytes(packets[10]), timestamp=packets[10].pts)))
    assert q.qsize() == 1 and q.get_nowait().samples == 960


def test_in_order_packets_pass_at_once_and_drop_late_ones() -> None:
    from aiortc.rtp import RtpPacket

    from rtc_agent.media.inbound import InOrderPackets

    def packet(seq: int) -> RtpPacket:
        p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960)
        p._data = bytes([seq % 256])
        return p

    buf = InOrderPackets()
    out = [buf.add(packet(s))[1] for s in (65534, 65535, 0, 2, 1, 2, 3)]
    # In order across the wrap, a gap passes straight on, late and duplicate are dropped.
    assert [f.data[0] if f else None for f in out] == [254, 255, 0, 2, None, None, 3]
    assert buf.late == 2


async def test_decode_on_loop_patches_a_fresh_receiver_and_leaves_others_alone() -> None:
    from types import SimpleNamespace

    from aiortc import RTCPeerConnection

    from rtc_agent.media.inbound import InOrderPackets, _LoopDecoder, decode_on_loop

    async def answering_receivers(n: int) -> tuple[list, list[RTCPeerConnection]]:
        """Receivers of a peer that applied an offer of n audio m-lines (not started)."""
        offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
        for _ in range(n):
            offerer.addTransceiver("audio", direction="sendonly")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        return [t.receiver for t in answerer.getTransceivers()], [offerer, answerer]

    (fresh, other), peers = await answering_receivers(2)
    try:
        assert decode_on_loop(fresh) is True
        assert isinstance(fresh._RTCRtpReceiver__decoder_queue, _LoopDecoder)
        assert isinstance(fresh._RTCRtpReceiver__jitter_buffer, InOrderPackets)
        # Internals not as expected (here: already started): left exactly as it is.
        queue_before = other._RTCRtpReceiver__decoder_queue
        buffer_before = other._RTCRtpReceiver__jitter_buffer
        other._RTCRtpReceiver__started = True
        assert decode_on_loop(other) is False
        assert other._RTCRtpReceiver__decoder_queue is queue_before
        assert other._RTCRtpReceiver__jitter_buffer is buffer_before
        other._RTCRtpReceiver__started = False
        assert decode_on_loop(SimpleNamespace()) is False
    finally:
        for pc in peers:
            await pc.close()
