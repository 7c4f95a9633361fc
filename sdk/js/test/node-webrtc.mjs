// The client SDK in Node: `@roamhq/wrtc` (libwebrtc's Node bindings, shipped as an npm package)
// provides RTCPeerConnection and MediaStream, `ws` the WebSocket, and a synthetic camera and
// microphone stand in for getUserMedia. With these installed as globals, the very bundle the
// browser loads (`dist/mooyaho.js`) runs unchanged, failover recovery included.
import wrtc from '@roamhq/wrtc';
import { WebSocket } from 'ws';

const { RTCVideoSource, RTCAudioSource, RTCVideoSink } = wrtc.nonstandard;

const WIDTH = 320;
const HEIGHT = 240;
const FPS = 15;
/** 10 ms of 48 kHz mono audio per `onData`, as libwebrtc wants it. */
const AUDIO_RATE = 48_000;
const AUDIO_FRAME = AUDIO_RATE / 100;

/** Makes the WebRTC and WebSocket globals the SDK uses. Idempotent. */
export function installNodeWebRtc() {
  for (const name of ['RTCPeerConnection', 'RTCSessionDescription', 'RTCIceCandidate', 'MediaStream', 'MediaStreamTrack']) {
    globalThis[name] ??= wrtc[name];
  }
  globalThis.WebSocket ??= WebSocket;
  globalThis.navigator ??= {};
  globalThis.navigator.mediaDevices ??= { getUserMedia: syntheticMedia };
  // @roamhq/wrtc 0.10 crashes (SIGSEGV) in Node's environment teardown once one of its
  // nonstandard media sources has existed, even stopped (its finalizers outlive libwebrtc's
  // threads). Leaving through process.exit() skips that teardown: once the event loop is empty
  // (every test reported, everything written), exit with the code the process already has.
  if (!installed) process.once('beforeExit', () => process.exit());
  installed = true;
}

let installed = false;

const running = new Set();

/**
 * getUserMedia for Node: a camera whose frames change every time (a moving gray ramp, I420) and
 * a microphone playing a tone, both pushed from timers until `stopSyntheticMedia()`.
 */
async function syntheticMedia(constraints = { audio: true, video: true }) {
  const stream = new wrtc.MediaStream();
  if (constraints.video) {
    const source = new RTCVideoSource();
    const data = new Uint8ClampedArray(WIDTH * HEIGHT * 1.5);
    let n = 0;
    const timer = setInterval(() => {
      n += 1;
      for (let i = 0; i < WIDTH * HEIGHT; i += 1) data[i] = (i + n * 4) & 0xff;
      data.fill(128, WIDTH * HEIGHT);
      source.onFrame({ width: WIDTH, height: HEIGHT, data });
    }, 1000 / FPS);
    const track = source.createTrack();
    running.add({ timer, track });
    stream.addTrack(track);
  }
  if (constraints.audio) {
    const source = new RTCAudioSource();
    const samples = new Int16Array(AUDIO_FRAME);
    let t = 0;
    const timer = setInterval(() => {
      for (let i = 0; i < AUDIO_FRAME; i += 1, t += 1) samples[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * t) / AUDIO_RATE));
      source.onData({ samples, sampleRate: AUDIO_RATE, bitsPerSample: 16, channelCount: 1, numberOfFrames: AUDIO_FRAME });
    }, 10);
    const track = source.createTrack();
    running.add({ timer, track });
    stream.addTrack(track);
  }
  return stream;
}

/** Stops every synthetic source (their timers would keep the process alive). */
export function stopSyntheticMedia() {
  for (const { timer, track } of running) {
    clearInterval(timer);
    track.stop();
  }
  running.clear();
}

/**
 * Counts decoded frames per remote video track (a libwebrtc video sink on each), so a test can
 * see a remote video advance. `stop()` releases every sink.
 */
export class FrameCounter {
  #sinks = new Map();

  /** Decoded frames of `track` so far (0 the first time: counting starts then). */
  frames(track) {
    let entry = this.#sinks.get(track);
    if (!entry) {
      entry = { sink: new RTCVideoSink(track), frames: 0 };
      entry.sink.onframe = () => { entry.frames += 1; };
      this.#sinks.set(track, entry);
    }
    return entry.frames;
  }

  stop() {
    for (const { sink } of this.#sinks.values()) sink.stop();
    this.#sinks.clear();
  }
}
