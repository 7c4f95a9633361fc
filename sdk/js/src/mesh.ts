// Peer-to-peer PeerConnections: the mesh of a non-SFU channel and direct calls. One `PeerLink`
// per remote session. Remote ICE candidates are queued until the remote description is set
// (the original raced them with 50 ms timers), including candidates that arrive before the
// link exists at all (a direct call's caller trickles before the callee accepts).

import type { MooyahoError, ServerFrame } from './types.js';

export interface MeshIo {
  request(message: Record<string, unknown>): Promise<ServerFrame>;
  /**
   * A refusal of a message to `sessionId`'s peer; the app hears of it (the SDK's `error`
   * event) unless the SDK knows it is expected.
   */
  onError(error: MooyahoError, sessionId: string): void;
  onTrack(sessionId: string, track: MediaStreamTrack): void;
  onConnected(sessionId: string, pc: RTCPeerConnection): void;
  /** The connection failed, or the other side closed it (hung up). */
  onFailed(sessionId: string): void;
}

type Candidate = RTCIceCandidateInit | null;

export class PeerLink {
  readonly pc: RTCPeerConnection;
  #queued: Candidate[] = [];
  #closed = false;

  constructor(
    readonly sessionId: string,
    config: RTCConfiguration,
    io: MeshIo,
  ) {
    this.pc = new RTCPeerConnection(config);
    this.pc.onicecandidate = (e) => {
      const candidate = e.candidate ? e.candidate.toJSON() : null;
      io.request({ type: 'candidate', to: sessionId, candidate }).catch((error: MooyahoError) => {
        // A candidate still in flight when the call ended (declined, hung up) is refused
        // `forbidden` by then: expected, and not the app's concern.
        if (!this.#closed) io.onError(error, sessionId);
      });
    };
    this.pc.ontrack = (e) => io.onTrack(sessionId, e.track);
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (state === 'connected') {
        io.onConnected(sessionId, this.pc);
        // The protocol has no hang-up message, but a peer that closes its PeerConnection sends a
        // DTLS close_notify: our DTLS transport turns `closed` at once, while ICE would take
        // seconds to notice. That is the direct-call hang-up signal.
        const dtls = this.pc.getReceivers()[0]?.transport;
        if (dtls) {
          dtls.onstatechange = () => {
            if ((dtls.state === 'closed' || dtls.state === 'failed') && !this.#closed) io.onFailed(sessionId);
          };
        }
      }
      if (state === 'failed' && !this.#closed) io.onFailed(sessionId);
    };
  }

  /** Offerer side: one transceiver per kind, sending what we have and receiving either way. */
  async createOffer(local: MediaStream | null): Promise<string> {
    for (const kind of ['audio', 'video'] as const) {
      const track = local?.getTracks().find((t) => t.kind === kind);
      if (track && local) this.pc.addTransceiver(track, { direction: 'sendrecv', streams: [local] });
      else this.pc.addTransceiver(kind, { direction: 'recvonly' });
    }
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    return this.pc.localDescription?.sdp ?? '';
  }

  /** Answerer side: attaches local tracks to the offered transceivers. */
  async answerOffer(sdp: string, local: MediaStream | null): Promise<string> {
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    for (const transceiver of this.pc.getTransceivers()) {
      const kind = transceiver.receiver.track.kind;
      const track = local?.getTracks().find((t) => t.kind === kind);
      if (track && local) {
        await transceiver.sender.replaceTrack(track);
        transceiver.sender.setStreams(local);
        transceiver.direction = 'sendrecv';
      } else {
        transceiver.direction = 'recvonly';
      }
    }
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    await this.#flush();
    return this.pc.localDescription?.sdp ?? '';
  }

  async acceptAnswer(sdp: string): Promise<void> {
    if (this.pc.signalingState !== 'have-local-offer') return; // duplicate or stale answer
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
    await this.#flush();
  }

  async addCandidate(candidate: Candidate): Promise<void> {
    if (!this.pc.remoteDescription) {
      this.#queued.push(candidate);
      return;
    }
    await this.#apply(candidate);
  }

  close(): void {
    this.#closed = true;
    this.#queued = [];
    this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = null;
    this.pc.close();
  }

  async #flush(): Promise<void> {
    const queued = this.#queued;
    this.#queued = [];
    for (const candidate of queued) await this.#apply(candidate);
  }

  async #apply(candidate: Candidate): Promise<void> {
    if (this.#closed) return;
    try {
      // null = end of candidates; addIceCandidate() with no argument signals it.
      await (candidate ? this.pc.addIceCandidate(candidate) : this.pc.addIceCandidate());
    } catch (e) {
      // A candidate for an m-line we rejected is harmless; don't tear the call down for it.
      console.warn('mooyaho: ignoring ICE candidate', e);
    }
  }
}

/** All peer-to-peer links of this client. */
export class Mesh {
  readonly peers = new Map<string, PeerLink>();
  /** Candidates from sessions we have no link with yet. */
  #early = new Map<string, Candidate[]>();

  constructor(
    private readonly config: RTCConfiguration,
    private readonly io: MeshIo,
  ) {}

  /** Offers to `to` (mesh: to a newcomer; direct call: the callee). Rejects if the server refuses. */
  async offer(to: string, local: MediaStream | null): Promise<void> {
    this.close(to);
    const link = this.#link(to);
    const sdp = await link.createOffer(local);
    await this.io.request({ type: 'call', to, sdp });
  }

  /** Answers an offer from `from` (mesh member, or an accepted direct call). */
  async answer(from: string, sdp: string, local: MediaStream | null): Promise<void> {
    this.close(from, { keepEarly: true });
    const link = this.#link(from);
    const early = this.#early.get(from) ?? [];
    this.#early.delete(from);
    for (const candidate of early) await link.addCandidate(candidate);
    const answer = await link.answerOffer(sdp, local);
    await this.io.request({ type: 'answer', to: from, sdp: answer });
  }

  async answered(from: string, sdp: string): Promise<void> {
    await this.peers.get(from)?.acceptAnswer(sdp);
  }

  async candidate(from: string, candidate: Candidate): Promise<void> {
    const link = this.peers.get(from);
    if (link) {
      await link.addCandidate(candidate);
      return;
    }
    const early = this.#early.get(from) ?? [];
    // Bounded: a caller cannot make us hold unbounded state before we accept.
    if (early.length < 200) early.push(candidate);
    this.#early.set(from, early);
  }

  /** Closes the link with `sessionId`; true if there was one. */
  close(sessionId: string, options: { keepEarly?: boolean } = {}): boolean {
    if (!options.keepEarly) this.#early.delete(sessionId);
    const link = this.peers.get(sessionId);
    if (!link) return false;
    this.peers.delete(sessionId);
    link.close();
    return true;
  }

  closeAll(): void {
    for (const id of [...this.peers.keys()]) this.close(id);
    this.#early.clear();
  }

  #link(sessionId: string): PeerLink {
    const link = new PeerLink(sessionId, this.config, this.io);
    this.peers.set(sessionId, link);
    return link;
  }
}
