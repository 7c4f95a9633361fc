"""An aiortc peer driven by media/tests/interop_aiortc.rs over newline-delimited JSON.

    peer.py publisher   prints {"offer": sdp}, reads {"answer": sdp}, then sends Opus + VP8
                        (the audio is loud noise: aiortc's RFC 6464 levels read about -5 dBov)
    peer.py silent-publisher
                        the same with digital silence for audio (levels of -127 dBov)
    peer.py subscriber  reads {"offer": sdp}, prints {"answer": sdp}, then prints {"ready": true}
                        once enough media arrived and was decoded

Both then wait for {"report": true}, print {"report": {...}} and exit. Payloads are recorded at
the RTP layer (hex): the publisher logs every packet its senders hand to the DTLS transport before
SRTP protection; a subscriber logs every packet its receivers get after SRTP unprotection.
"""

import asyncio
import json
import random
import sys

from av import AudioFrame, VideoFrame
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket, is_rtcp
from aiortc.sdp import SessionDescription

# A broken SFU must fail the Rust test well within a minute: every wait is bounded.
STEP_TIMEOUT = 20.0
LIFETIME = 55.0
# A subscriber is ready once it has this much.
READY_PACKETS = 100
READY_FRAMES = 20


class NoiseAudioTrack(AudioStreamTrack):
    """Deterministic noise, so that every Opus packet differs (silence encodes identically)."""

    def __init__(self) -> None:
        super().__init__()
        self._random = random.Random(1)

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        for plane in frame.planes:
            plane.update(self._random.randbytes(plane.buffer_size))
        return frame


class NoiseVideoTrack(VideoStreamTrack):
    """Deterministic 320x240 grey frames with a strip of noise on top: every VP8 frame differs
    and spans a few RTP packets."""

    NOISE_ROWS = 16

    def __init__(self) -> None:
        super().__init__()
        self._random = random.Random(2)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=320, height=240, format="yuv420p")
        for index, plane in enumerate(frame.planes):
            noise = self.NOISE_ROWS * plane.line_size if index == 0 else 0
            grey = bytes([128]) * (plane.buffer_size - noise)
            plane.update(self._random.randbytes(noise) + grey)
        frame.pts = pts
        frame.time_base = time_base
        return frame


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader


async def receive(reader: asyncio.StreamReader, key: str, timeout=STEP_TIMEOUT):
    line = await asyncio.wait_for(reader.readline(), timeout)
    if not line:
        raise SystemExit(f"stdin closed while waiting for {key!r}")
    message = json.loads(line)
    if key not in message:
        raise SystemExit(f"expected {key!r}, got {line[:200]!r}")
    return message[key]


def kinds_by_ssrc(pc: RTCPeerConnection) -> dict:
    return {sender._ssrc: sender.track.kind for sender in pc.getSenders()}


async def publisher(reader: asyncio.StreamReader, audio=NoiseAudioTrack) -> dict:
    pc = RTCPeerConnection()
    pc.addTrack(audio())
    pc.addTrack(NoiseVideoTrack())
    sent = {"audio": [], "video": []}
    seen = set()

    # All senders share one (BUNDLE) DTLS transport: log what they hand it before SRTP.
    transport = pc.getSenders()[0].transport
    send_rtp = transport._send_rtp
    kinds = kinds_by_ssrc(pc)

    async def logging_send_rtp(data: bytes) -> None:
        if not is_rtcp(data):
            packet = RtpPacket.parse(data)
            kind = kinds.get(packet.ssrc)  # RTX retransmissions have other SSRCs
            # A retransmission without RTX repeats a sequence number: log first sends only.
            if kind is not None and (packet.ssrc, packet.sequence_number) not in seen:
                seen.add((packet.ssrc, packet.sequence_number))
                sent[kind].append(packet.payload.hex())
        await send_rtp(data)

    transport._send_rtp = logging_send_rtp

    await pc.setLocalDescription(await pc.createOffer())  # returns with ICE gathered
    send({"offer": pc.localDescription.sdp})
    answer = await receive(reader, "answer")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    await receive(reader, "report", timeout=LIFETIME)
    report = {**sent, "connection_state": pc.connectionState}
    await asyncio.wait_for(pc.close(), STEP_TIMEOUT)
    return report


async def subscriber(reader: asyncio.StreamReader) -> dict:
    pc = RTCPeerConnection()
    received = {"audio": [], "video": []}
    frames = {"audio": 0, "video": 0}
    track_ids = []
    rtx_packets = 0
    rtx_payload_types = set()
    ready = asyncio.Event()

    def check_ready() -> None:
        if (
            len(received["audio"]) >= READY_PACKETS
            and len(received["video"]) >= READY_PACKETS
            and frames["video"] >= READY_FRAMES
        ):
            ready.set()

    handle_rtp = RTCRtpReceiver._handle_rtp_packet

    async def logging_handle_rtp(self, packet: RtpPacket, arrival_time_ms: int):
        nonlocal rtx_packets
        if packet.payload_type in rtx_payload_types:
            rtx_packets += 1
        else:
            received[self.track.kind].append(packet.payload.hex())
            check_ready()
        await handle_rtp(self, packet, arrival_time_ms)

    RTCRtpReceiver._handle_rtp_packet = logging_handle_rtp

    async def consume(track) -> None:
        while True:
            try:
                await track.recv()
            except Exception:  # MediaStreamError when the track ends
                return
            frames[track.kind] += 1
            check_ready()

    @pc.on("track")
    def on_track(track) -> None:
        track_ids.append(track.id)
        asyncio.ensure_future(consume(track))

    offer = await receive(reader, "offer")
    description = SessionDescription.parse(offer)
    for media in description.media:
        for codec in media.rtp.codecs:
            if codec.mimeType.lower().endswith("/rtx"):
                rtx_payload_types.add(codec.payloadType)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())  # returns with ICE gathered
    send({"answer": pc.localDescription.sdp})

    report_request = asyncio.ensure_future(receive(reader, "report", timeout=LIFETIME))
    ready_wait = asyncio.ensure_future(ready.wait())
    done, _ = await asyncio.wait(
        [report_request, ready_wait], return_when=asyncio.FIRST_COMPLETED
    )
    if ready_wait in done:
        send({"ready": True})
        await report_request
    else:
        ready_wait.cancel()
        report_request.result()

    report = {
        **received,
        "frames": frames,
        "rtx_packets": rtx_packets,
        # aiortc exposes no stream id on a remote track: take it from the offer's msid.
        "stream_ids": [
            media.msid.split()[0] for media in description.media if media.msid
        ],
        "track_ids": track_ids,
        "connection_state": pc.connectionState,
    }
    await asyncio.wait_for(pc.close(), STEP_TIMEOUT)
    return report


async def main(role: str) -> None:
    reader = await stdin_reader()
    report = await asyncio.wait_for(ROLES[role](reader), LIFETIME)
    send({"report": report})


ROLES = {
    "publisher": publisher,
    # aiortc's base audio track yields digital silence.
    "silent-publisher": lambda reader: publisher(reader, audio=AudioStreamTrack),
    "subscriber": subscriber,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ROLES:
        raise SystemExit("usage: peer.py " + "|".join(ROLES))
    asyncio.run(main(sys.argv[1]))
