// SFU media (DESIGN §3): one publish PeerConnection that we offer (`call {isSFU}` →
// `answered {isSFU}`) and one subscribe PeerConnection that the SFU offers (`called {isSFU}`),
// re-offered whenever publishers come and go. Each remote stream's id names the publishing
// session. No mesh PeerConnection is ever made in an SFU channel (the original's bug 7).

import type { ServerFrame } from './types.js';

export interface SfuIo {
  request(message: Record<string, unknown>): Promise<ServerFrame>;
  send(message: Record<string, unknown>): void;
  onTrack(sessionId: string, track: MediaStreamTrack): void;
  onTrackEnded(sessionId: string, track: MediaStreamTrack): void;
  onPublishConnected(pc: RTCPeerConnection): void;
  onSubscribeConnected(pc: RTCPeerConnection): void;
  /**
   * One of the SFU PeerConnections went `failed` (the SDK recovers; see `Mooyaho`): `ice` when
   * no path to the node worked, `dtls` when ICE did but the secure handshake or its consent
   * failed.
   */
  onFailed(side: 'publish' | 'subscribe', layer: 'ice' | 'dtls'): void;
}

type Candidate = RTCIceCandidateInit | null;

/** One simulcast layer the SDK publishes: its rid, downscale and bitrate cap. */
interface Layer {
  rid: 'q' | 'h' | 'f';
  scaleResolutionDownBy: number;
  maxBitrate: number;
}

const LAYERS: Layer[] = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * The simulcast encodings for a camera track, lowest first (the SFU orders `q` < `h` < `f`):
 * three layers from 960×540 up, two (`h`, `f`) from 480×270, none (one plain encoding) below.
 * These are the layer counts Chromium sends at those sizes: asked for more, it silently sends
 * only the lowest ones. The bitrate caps keep all three under the node's REMB.
 */
export function simulcastEncodings(width: number, height: number): RTCRtpEncodingParameters[] {
  const pixels = width * height;
  const layers = pixels >= 960 * 540 ? LAYERS : pixels >= 480 * 270 ? LAYERS.slice(1) : [];
  return layers.map((l) => ({ ...l }));
}

export class Sfu {
  publisher: RTCPeerConnection | null = null;
  subscriber: RTCPeerConnection | null = null;
  /** Re-offers are applied one at a time, in arrival order. */
  #subscribeChain: Promise<void> = Promise.resolve();
  /** Publish encoding changes (dynacast) are applied one at a time, in arrival order. */
  #parametersChain: Promise<void> = Promise.resolve();
  /** Our publish candidates, held until the SFU accepted the publish offer. */
  #outgoing: Candidate[] | null = [];
  /** Which session each received track belongs to (from its stream id). */
  #trackSession = new Map<MediaStreamTrack, string>();
  #closed = false;

  constructor(
    private readonly config: RTCConfiguration,
    private readonly io: SfuIo,
    /** Publish camera video as simulcast layers. */
    private readonly simulcast = true,
  ) {}

  /** Publishes the local tracks. Rejects with the server's error (e.g. `sfu_unavailable`). */
  async publish(local: MediaStream): Promise<void> {
    const pc = new RTCPeerConnection(this.config);
    this.publisher = pc;
    for (const track of local.getTracks()) {
      const init: RTCRtpTransceiverInit = { direction: 'sendonly', streams: [local] };
      // Screen shares set a `detail`/`text` content hint: one full-resolution encoding.
      const camera = track.kind === 'video' && track.contentHint !== 'detail' && track.contentHint !== 'text';
      if (this.simulcast && camera) {
        const { width = 0, height = 0 } = track.getSettings();
        const encodings = simulcastEncodings(width, height);
        if (encodings.length > 1) init.sendEncodings = encodings;
      }
      pc.addTransceiver(track, init);
    }
    pc.onicecandidate = (e) => {
      const candidate = e.candidate ? e.candidate.toJSON() : null;
      if (this.#outgoing) this.#outgoing.push(candidate);
      else this.io.send({ type: 'candidate', isSFU: true, candidate });
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') this.io.onPublishConnected(pc);
      if (pc.connectionState === 'failed') this.io.onFailed('publish', failedLayer(pc));
    };
    await pc.setLocalDescription(await pc.createOffer());
    let reply;
    try {
      reply = await this.io.request({ type: 'call', isSFU: true, sdp: pc.localDescription?.sdp ?? '' });
    } catch (e) {
      // Refused (e.g. `sfu_unavailable`): don't keep a PeerConnection gathering for nobody.
      pc.onicecandidate = pc.onconnectionstatechange = null;
      pc.close();
      if (this.publisher === pc) this.publisher = null;
      throw e;
    }
    // The answer may come as the reply itself or, after an `ack`, as an `answered` event.
    if (reply.type === 'answered') await this.answered(String(reply['sdp']));
    const held = this.#outgoing ?? [];
    this.#outgoing = null;
    for (const candidate of held) this.io.send({ type: 'candidate', isSFU: true, candidate });
  }

  async answered(sdp: string): Promise<void> {
    if (this.publisher?.signalingState === 'have-local-offer') {
      await this.publisher.setRemoteDescription({ type: 'answer', sdp });
    }
  }

  /** A (re-)offer of the subscribe PeerConnection. */
  offered(sdp: string): Promise<void> {
    this.#subscribeChain = this.#subscribeChain.then(() => this.#answer(sdp)).catch((e) => {
      console.error('mooyaho: SFU re-offer failed', e);
    });
    return this.#subscribeChain;
  }

  /**
   * Dynacast: the node says which layers of our video on m-line `mid` anyone consumes (by rid,
   * or by index for encodings without one); the others are set `active: false`, so nobody's
   * unwatched 720p is encoded, and set active again when needed. Applied one at a time (a
   * sender takes one `setParameters` at once), each against the sender's current parameters.
   */
  subscribedQualities(mid: string, qualities: string[], layers: number[]): Promise<void> {
    this.#parametersChain = this.#parametersChain
      .then(async () => {
        const sender = this.publisher?.getTransceivers().find((t) => t.mid === mid)?.sender;
        if (!sender) return;
        const parameters = sender.getParameters();
        const encodings = parameters.encodings ?? [];
        if (encodings.length < 2) return;
        const wanted = encodings.map((e, i) => (e.rid ? qualities.includes(e.rid) : layers.includes(i)));
        // The node always lists the lowest layer; never stop every encoding whatever it says.
        if (!wanted.some(Boolean)) wanted[0] = true;
        if (encodings.every((e, i) => (e.active ?? true) === wanted[i])) return;
        encodings.forEach((e, i) => {
          e.active = wanted[i];
        });
        await sender.setParameters(parameters);
      })
      .catch((e) => {
        console.error('mooyaho: applying subscribedQualities failed', e);
      });
    return this.#parametersChain;
  }

  /** SFU candidates carry no session; route them by ICE username fragment. */
  async candidate(candidate: Candidate): Promise<void> {
    const ufrag = candidate?.usernameFragment;
    const pcs = [this.publisher, this.subscriber].filter((pc): pc is RTCPeerConnection => pc !== null);
    const target =
      pcs.find((pc) => ufrag && pc.remoteDescription?.sdp.includes(`a=ice-ufrag:${ufrag}`)) ?? this.publisher;
    if (!target?.remoteDescription) return; // the SFU is ICE-lite in practice; late trickle is optional
    await (candidate ? target.addIceCandidate(candidate) : target.addIceCandidate()).catch(() => undefined);
  }

  /** The PeerConnections are closed: nothing more will happen on them. */
  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#closed = true;
    for (const pc of [this.publisher, this.subscriber]) {
      if (!pc) continue;
      pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = null;
      pc.close();
    }
    this.publisher = this.subscriber = null;
    this.#trackSession.clear();
  }

  async #answer(sdp: string): Promise<void> {
    if (this.#closed) return;
    const pc = this.subscriber ?? this.#createSubscriber();
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await this.io.request({ type: 'answer', isSFU: true, sdp: pc.localDescription?.sdp ?? '' });
    // An ended track's m-line is re-offered rejected (its transceiver stops and leaves
    // getTransceivers()) or inactive: drop every track no transceiver still receives.
    const receiving = new Set(
      pc
        .getTransceivers()
        .filter((t) => t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv')
        .map((t) => t.receiver.track),
    );
    for (const [track, session] of this.#trackSession) {
      if (!receiving.has(track)) {
        this.#trackSession.delete(track);
        this.io.onTrackEnded(session, track);
      }
    }
  }

  #createSubscriber(): RTCPeerConnection {
    const pc = new RTCPeerConnection(this.config);
    this.subscriber = pc;
    pc.onicecandidate = (e) => {
      this.io.send({ type: 'candidate', isSFU: true, candidate: e.candidate ? e.candidate.toJSON() : null });
    };
    pc.ontrack = (e) => {
      const session = e.streams[0]?.id;
      if (!session) return;
      this.#trackSession.set(e.track, session);
      this.io.onTrack(session, e.track);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') this.io.onSubscribeConnected(pc);
      if (pc.connectionState === 'failed') this.io.onFailed('subscribe', failedLayer(pc));
    };
    return pc;
  }
}

/** Which layer of a `failed` PeerConnection gave up: ICE itself, or DTLS over a working path. */
function failedLayer(pc: RTCPeerConnection): 'ice' | 'dtls' {
  return pc.iceConnectionState === 'failed' || pc.iceConnectionState === 'disconnected' ? 'ice' : 'dtls';
}
