// The browser client: one signaling socket, the channel's member list, and either the
// peer-to-peer mesh (mesh channels and direct calls) or the SFU PeerConnections.

import { Emitter, type IncomingCall } from './events.js';
import { Mesh } from './mesh.js';
import { Sfu } from './sfu.js';
import { SignalingSocket, iceServersOf } from './socket.js';
import {
  MooyahoError,
  type ChatMessage,
  type MediaKey,
  type MooyahoConfig,
  type ServerFrame,
  type SessionInfo,
  type SubscriptionWish,
  type VideoQuality,
} from './types.js';

/** How long a direct call rings before `directCall` gives up. */
const CALL_TIMEOUT_MS = 60_000;
/** SFU recovery: the first retry's delay, doubling per failed attempt up to the maximum. */
const SFU_RETRY_FIRST_MS = 1_000;
const SFU_RETRY_MAX_MS = 15_000;
/**
 * SFU PeerConnections that fail again and again without ever reconnecting (UDP blocked, no
 * TURN or ICE-TCP) stop being rebuilt after this many attempts: each one is a leave and an
 * enter that every member sees and every subscriber renegotiates.
 */
const SFU_MAX_FAILED_RECOVERIES = 5;
/**
 * A publish whose request the signaling socket lost (it reconnects and resumes the session) or
 * that the server could not answer for a moment is sent again, up to this many attempts in
 * all; a refusal (e.g. `sfu_unavailable`, `forbidden`) is final. The server replaces a publish
 * it may have taken before the drop, so a second one is safe.
 */
const PUBLISH_ATTEMPTS = 5;
const PUBLISH_RETRYABLE = new Set(['disconnected', 'timeout', 'unavailable', 'rate_limited']);

/** `base` doubled per step up to the maximum, jittered ±25 %. */
function backoffMs(step: number): number {
  const delay = Math.min(SFU_RETRY_FIRST_MS * 2 ** step, SFU_RETRY_MAX_MS);
  return delay * (0.75 + Math.random() * 0.5);
}

/** An SFU recovery in progress (see `#recoverSfu`). */
interface SfuRecovery {
  /** Bumped by every new recovery, so a superseded one stops at its next step. */
  generation: number;
  /** The new SFU PeerConnections are waiting to connect (then `reconnected` fires). */
  awaiting: 'publish' | 'subscribe' | null;
}

interface PendingCall {
  resolve(): void;
  reject(error: MooyahoError): void;
  timer: ReturnType<typeof setTimeout>;
}

export class Mooyaho extends Emitter {
  readonly config: Readonly<MooyahoConfig>;
  /** The current channel id, or '' outside a channel (the original's convention). */
  channelId = '';
  sfuEnabled = false;
  /** Members of the current channel, this client included. */
  readonly sessions = new Map<string, SessionInfo>();
  /** One stream per remote session, owned by the SDK (tracks are added and removed in place). */
  readonly remoteStreams = new Map<string, MediaStream>();

  #socket: SignalingSocket;
  #rtc: RTCConfiguration;
  #local: MediaStream | null = null;
  #mesh: Mesh;
  #sfu: Sfu | null = null;
  /** Settles once `enter` has finished and the member list is loaded. */
  #entering: Promise<void> | null = null;
  #calls = new Map<string, PendingCall>();
  /** Direct calls ringing here, so a second offer from the same caller replaces the first. */
  #incoming = new Map<string, string>();
  #sfuRecovery: SfuRecovery = { generation: 0, awaiting: null };
  /** SFU PeerConnection failures since the SFU last (re)connected. */
  #sfuFailures = 0;
  /** `setSubscription` wishes by publisher, told again to each new subscribe PeerConnection's node. */
  #wishes = new Map<string, SubscriptionWish>();

  constructor(config: MooyahoConfig) {
    super();
    this.config = { ...config };
    // One configuration object shared by every PeerConnection maker: the server's TURN servers
    // are written into it when a socket connects or resumes.
    this.#rtc = { iceServers: config.iceServers ?? [], iceTransportPolicy: config.iceTransportPolicy ?? 'all' };
    const base = config.url.replace(/^http/, 'ws').replace(/\/+$/, '');
    const url = `${base}/websocket?allowDirectCall=${config.allowDirectCall ? 'true' : 'false'}`;
    this.#socket = new SignalingSocket(
      url,
      {
        onEvent: (frame) => void this.#onEvent(frame).catch((e: unknown) => this.#fail(e)),
        onResumed: (sessionId) => void this.#onResumed(sessionId),
        onResumeFailed: (sessionId, error) => this.#onResumeFailed(sessionId, error),
        onError: (error) => this.emit('error', error),
        onIceServers: (servers) => this.#useIceServers(servers),
      },
      { requestTimeoutMs: config.requestTimeoutMs ?? 10_000, heartbeatMs: config.heartbeatMs ?? 5_000 },
      config.token,
    );
    this.#mesh = new Mesh(this.#rtc, {
      request: (m) => this.#socket.request(m),
      onError: (error, sessionId) => {
        // While our call to `sessionId` is unanswered, a `forbidden` candidate means the callee
        // has just declined it: that refusal's reply can overtake the `callRejected` that
        // settles the call (and closes the peer). The call's own outcome tells the app.
        if (error.code === 'forbidden' && this.#calls.has(sessionId)) return;
        this.emit('error', error);
      },
      onTrack: (id, track) => this.#addRemoteTrack(id, track),
      onConnected: (sessionId, peer) => this.emit('peerConnected', { sessionId, peer }),
      onFailed: (sessionId) => this.hangUp(sessionId),
    });
  }

  /** The signaling socket (tests use `socket.drop()` to simulate a network drop). */
  get socket(): SignalingSocket {
    return this.#socket;
  }
  get sessionId(): string | null {
    return this.#socket.sessionId;
  }
  /** Peer-to-peer PeerConnections by remote session id. */
  get peers(): Map<string, RTCPeerConnection> {
    return new Map([...this.#mesh.peers].map(([id, link]) => [id, link.pc]));
  }
  /** The SFU PeerConnections, when in an SFU channel. */
  get sfuPeers(): { publisher: RTCPeerConnection | null; subscriber: RTCPeerConnection | null } {
    return { publisher: this.#sfu?.publisher ?? null, subscriber: this.#sfu?.subscriber ?? null };
  }
  get sessionsArray(): SessionInfo[] {
    return [...this.sessions.values()];
  }

  /** Opens the socket; resolves the session id. Rejects on failure or timeout. */
  async connect(): Promise<string> {
    const id = await this.#socket.connect();
    this.emit('connected', { sessionId: id });
    return id;
  }

  /** Camera/microphone, cached. Call before `enter`/`directCall`: mesh tracks go into PCs created later. */
  async createUserMedia(constraints: MediaStreamConstraints = { audio: true, video: true }): Promise<MediaStream> {
    if (this.#local) return this.#local;
    // Browsers hide cameras from plain-http pages other than localhost.
    if (!navigator.mediaDevices) {
      throw new MooyahoError('insecure_context', 'camera and microphone need a secure context: serve the page over HTTPS (or from localhost)');
    }
    const local = await navigator.mediaDevices.getUserMedia(constraints);
    this.#local = local;
    // In an SFU channel entered without a camera, start publishing now (publishing is its own
    // PeerConnection, so nothing needs renegotiating). Mesh links made earlier stay receive-only.
    if (this.#sfu && !this.#sfu.publisher) void this.#publishOn(this.#sfu, local);
    return local;
  }

  getMyStream(): MediaStream | null {
    return this.#local;
  }

  getRemoteStreamById(sessionId: string): MediaStream | null {
    return this.remoteStreams.get(sessionId) ?? null;
  }

  /** Binds a user to this session (only when the server runs with anonymous mode on). */
  async integrateUser(user: Record<string, unknown>): Promise<unknown> {
    const reply = await this.#socket.request({ type: 'integrateUser', user });
    this.#useIceServers(iceServersOf(reply));
    return reply['user'];
  }

  /** The server hands TURN credentials to integrated sessions (connect with a join token,
   * `integrated`, resume): they go after the app's own `iceServers` into every new
   * PeerConnection's configuration. A frame without any leaves the last ones in place. */
  #useIceServers(servers: RTCIceServer[]): void {
    if (servers.length === 0) return;
    this.#rtc.iceServers = [...(this.config.iceServers ?? []), ...servers];
  }

  /** Enters a channel. Resolves once entered and the member list is loaded; rejects with the server's error. */
  enter(channelId: string): Promise<void> {
    const entering = (async () => {
      const reply = await this.#socket.request({ type: 'enter', channel: channelId });
      // The server moved us out of the previous channel; a refused enter leaves us where we were.
      if (this.channelId && this.channelId !== channelId) this.#reset();
      this.channelId = String(reply['channel']);
      this.sfuEnabled = reply['sfuEnabled'] === true;
      await this.#loadSessions();
      this.emit('enterSuccess', { channel: this.channelId, sfuEnabled: this.sfuEnabled });
      // Re-entering the same channel is a no-op on the server: keep the running SFU session.
      if (this.sfuEnabled && !this.#sfu) this.#startSfu();
    })();
    this.#entering = entering.catch(() => undefined);
    return entering;
  }

  /** Leaves the channel and releases everything tied to it. */
  async leave(): Promise<void> {
    const wasIn = this.channelId !== '';
    this.#reset();
    if (wasIn) await this.#socket.request({ type: 'leave' });
  }

  /** Calls a session outside any shared channel. Resolves when it accepts, rejects when it declines. */
  async directCall(sessionId: string): Promise<void> {
    if (!this.config.allowDirectCall) {
      throw new MooyahoError('invalid_state', 'direct calls need `allowDirectCall: true`', 'call');
    }
    this.#settleCall(sessionId, new MooyahoError('invalid_state', 'superseded by a new call'));
    const answered = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#calls.delete(sessionId);
        this.hangUp(sessionId);
        reject(new MooyahoError('timeout', 'the call was not answered', 'call'));
      }, CALL_TIMEOUT_MS);
      this.#calls.set(sessionId, { resolve, reject, timer });
    });
    try {
      await this.#mesh.offer(sessionId, this.#local);
    } catch (e) {
      this.#settleCall(sessionId, e as MooyahoError);
      this.#mesh.close(sessionId);
    }
    return answered;
  }

  /** Ends a peer-to-peer connection (a direct call, typically) and drops that session's stream. */
  hangUp(sessionId: string): void {
    const had = this.#mesh.close(sessionId);
    this.#dropStream(sessionId);
    if (had) this.emit('peerDisconnected', { sessionId });
  }

  /** Announces a mute/camera change and applies it to the local tracks. */
  async updateMediaState(key: MediaKey, value: boolean): Promise<void> {
    const kind = key === 'muted' ? 'audio' : 'video';
    for (const track of this.#local?.getTracks() ?? []) if (track.kind === kind) track.enabled = !value;
    if (this.channelId) await this.#socket.request({ type: 'updateMediaState', key, value });
  }

  /**
   * In an SFU channel, what this client wants of `sessionId`'s media: `video` is the most it
   * wants (`high`, `medium`, `low` simulcast layer, or `off` for no video packets), `audio`
   * whether it wants the audio (omitted: unchanged). Resolves once the server acknowledged it;
   * rejects with the server's error (`invalid_message`, `session_not_found`, `sfu_unavailable`
   * while nobody publishes yet). The SDK tells the wish again after an SFU recovery.
   */
  async setSubscription(sessionId: string, wish: SubscriptionWish): Promise<void> {
    const message: Record<string, unknown> = { type: 'setSubscription', sessionId, video: wish.video };
    if (wish.audio !== undefined) message['audio'] = wish.audio;
    await this.#socket.request(message);
    const previous = this.#wishes.get(sessionId);
    this.#wishes.set(sessionId, { video: wish.video, audio: wish.audio ?? previous?.audio });
  }

  /**
   * Adaptive stream: keeps `sessionId`'s video wish matched to how large `element` (where the
   * application renders that session's video) is on screen, so a thumbnail gets the low layer
   * and a hidden or zero-size element none. The rendered size in device pixels picks the wish
   * ({@link qualityForSize}): no area or not in the viewport → `off`; the longer side ≤ 320 →
   * `low`; ≤ 640 → `medium`; larger → `high` (the SDK's layers are ¼, ½ and full of a 720p
   * camera: 320, 640 and 1280 wide). Changes are sent at most every 300 ms, only when the wish
   * changes; a refused one (e.g. nobody publishes yet) is tried again at the next change or
   * after 2 s. Returns a function that stops observing (the last wish stays).
   */
  observeVideo(sessionId: string, element: Element): () => void {
    let size = { width: 0, height: 0 };
    let visible = true;
    let sent: VideoQuality | null = null;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let stopped = false;
    const tell = () => {
      timer = null;
      if (stopped) return;
      const quality = visible ? qualityForSize(size.width, size.height) : 'off';
      if (quality === sent) return;
      sent = quality;
      this.setSubscription(sessionId, { video: quality }).catch(() => {
        sent = null;
        if (!stopped && timer === null) timer = setTimeout(tell, 2000);
      });
    };
    const schedule = () => {
      if (timer === null && !stopped) timer = setTimeout(tell, 300);
    };
    const ratio = typeof devicePixelRatio === 'number' ? devicePixelRatio : 1;
    const resize = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const box = entry.contentRect;
        size = { width: box.width * ratio, height: box.height * ratio };
      }
      schedule();
    });
    const intersection = new IntersectionObserver((entries) => {
      for (const entry of entries) visible = entry.isIntersecting;
      schedule();
    });
    resize.observe(element);
    intersection.observe(element);
    return () => {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      resize.disconnect();
      intersection.disconnect();
    };
  }

  /** Chat to the channel: a string is sent as text, anything else as custom data. */
  async sendMessage(message: string | unknown): Promise<void> {
    const body: ChatMessage = typeof message === 'string' ? { type: 'text', text: message } : { type: 'custom', data: message };
    await this.#socket.request({ type: 'message', message: body });
  }

  /** The channel's members, fresh from the server. */
  async getSessions(): Promise<SessionInfo[]> {
    const reply = await this.#socket.request({ type: 'listSessions' });
    return (reply['sessions'] as SessionInfo[] | undefined) ?? [];
  }

  /** Simulates a network drop (the original's name): the client reconnects and resumes. */
  manuallyDisconnect(): void {
    this.#socket.drop();
  }

  /** Closes everything; the instance cannot be used again. */
  dispose(): void {
    this.#reset();
    for (const id of [...this.#calls.keys()]) this.#settleCall(id, new MooyahoError('invalid_state', 'disposed'));
    this.#socket.dispose();
    this.#local?.getTracks().forEach((t) => t.stop());
    this.#local = null;
    this.removeAllListeners();
  }

  // ---- server events ------------------------------------------------------------------------

  async #onEvent(frame: ServerFrame): Promise<void> {
    const from = typeof frame['from'] === 'string' ? frame['from'] : null;
    const sessionId = String(frame['sessionId'] ?? '');
    switch (frame.type) {
      case 'entered': {
        const isSelf = sessionId === this.sessionId;
        const known = this.sessions.has(sessionId);
        this.sessions.set(sessionId, {
          id: sessionId,
          user: frame['user'],
          state: this.sessions.get(sessionId)?.state ?? { muted: false, videoOff: false },
        });
        this.emit('entered', { sessionId, user: frame['user'], isSelf });
        if (isSelf || known) return;
        // If our own `enter` is still in flight we do not know the channel's kind yet.
        if (this.#entering) await this.#entering;
        // Mesh rule: existing members offer to the newcomer, the newcomer answers.
        if (!this.sfuEnabled && this.channelId && this.sessions.has(sessionId)) {
          await this.#mesh.offer(sessionId, this.#local);
        }
        return;
      }
      case 'left':
        this.#removeMember(sessionId);
        return;
      case 'called':
        if (frame['isSFU'] === true) {
          // The node offers to a receive-only member while the server is still handling our
          // `enter`, so this can overtake `enterSuccess`: wait until the SFU session exists.
          if (this.#entering) await this.#entering;
          await this.#sfu?.offered(String(frame['sdp']));
        } else if (from) await this.#onCalled(from, String(frame['sdp']));
        return;
      case 'answered':
        if (frame['isSFU'] === true) await this.#sfu?.answered(String(frame['sdp']));
        else if (from) {
          await this.#mesh.answered(from, String(frame['sdp']));
          this.#settleCall(from);
        }
        return;
      case 'candidated': {
        const candidate = (frame['candidate'] ?? null) as RTCIceCandidateInit | null;
        if (frame['isSFU'] === true) await this.#sfu?.candidate(candidate);
        else if (from) await this.#mesh.candidate(from, candidate);
        return;
      }
      case 'rejected': {
        const reason = typeof frame['reason'] === 'string' ? frame['reason'] : null;
        if (!from) return;
        this.hangUp(from);
        this.#settleCall(from, new MooyahoError('rejected', reason ?? 'the call was declined', 'call'));
        this.emit('callRejected', { sessionId: from, reason });
        return;
      }
      case 'messaged':
        this.emit('messaged', {
          sessionId,
          message: frame['message'] as ChatMessage,
          isSelf: sessionId === this.sessionId,
        });
        return;
      case 'updatedMediaState': {
        const key = frame['key'] as MediaKey;
        const value = frame['value'] === true;
        const member = this.sessions.get(sessionId);
        if (member) member.state[key] = value;
        this.emit('updatedMediaState', { sessionId, key, value, isSelf: sessionId === this.sessionId });
        return;
      }
      case 'activeSpeakers': {
        const list = Array.isArray(frame['speakers']) ? frame['speakers'] : [];
        const speakers = list.flatMap((entry: unknown) => {
          const s = entry as { sessionId?: unknown; level?: unknown };
          if (typeof s?.sessionId !== 'string' || typeof s.level !== 'number') return [];
          return [{ sessionId: s.sessionId, level: s.level, isSelf: s.sessionId === this.sessionId }];
        });
        this.emit('activeSpeakersChanged', { speakers });
        return;
      }
      case 'subscribedQualities': {
        const mid = frame['mid'];
        const qualities = frame['qualities'];
        const layers = frame['layers'];
        if (typeof mid !== 'string' || !Array.isArray(qualities) || !Array.isArray(layers)) return;
        const rids = qualities.filter((q): q is string => typeof q === 'string');
        const indexes = layers.filter((l): l is number => typeof l === 'number');
        void this.#sfu?.subscribedQualities(mid, rids, indexes);
        this.emit('subscribedQualities', { mid, qualities: rids, layers: indexes });
        return;
      }
      case 'channelClosed': {
        const channel = String(frame['channel']);
        if (channel === this.channelId) this.#reset();
        this.emit('channelClosed', { channel });
        return;
      }
      case 'integrated':
        this.#useIceServers(iceServersOf(frame));
        this.emit('integrated', { user: frame['user'] });
        return;
      case 'sfuRestart': {
        const channel = String(frame['channel']);
        if (channel !== this.channelId || !this.sfuEnabled) return;
        this.emit('sfuRestart', { channel });
        void this.#recoverSfu('sfuRestart');
        return;
      }
      default:
        return; // unknown events from a newer server are ignored, not fatal
    }
  }

  async #onCalled(from: string, sdp: string): Promise<void> {
    // An offer can overtake our member list right after `enter`; decide once it is loaded.
    if (this.#entering) await this.#entering;
    if (this.channelId && !this.sfuEnabled && this.sessions.has(from)) {
      await this.#mesh.answer(from, sdp, this.#local); // entering a mesh channel is the consent
      return;
    }
    if (this.#mesh.peers.has(from)) {
      // Renegotiation within an accepted direct call.
      await this.#mesh.answer(from, sdp, this.#local);
      return;
    }
    if (!this.config.allowDirectCall) return; // the server does not deliver these anyway
    this.#incoming.set(from, sdp);
    let settled = false;
    const call: IncomingCall = {
      sessionId: from,
      accept: async () => {
        if (settled) throw new MooyahoError('invalid_state', 'this call was already answered or declined');
        settled = true;
        const offer = this.#incoming.get(from) ?? sdp;
        this.#incoming.delete(from);
        await this.#mesh.answer(from, offer, this.#local);
      },
      reject: (reason?: string) => {
        if (settled) return;
        settled = true;
        this.#incoming.delete(from);
        this.#mesh.close(from); // forget the caller's early candidates
        this.#socket.send(reason === undefined ? { type: 'reject', to: from } : { type: 'reject', to: from, reason });
      },
    };
    this.emit('incomingCall', call);
  }

  async #onResumed(sessionId: string): Promise<void> {
    this.emit('reconnected', { sessionId, what: 'socket' });
    // Events sent while the socket was down are lost: reconcile the member list. Newcomers we
    // missed get our offer (they wait for existing members), departed members are dropped.
    if (!this.channelId) return;
    try {
      const current = await this.getSessions();
      const ids = new Set(current.map((s) => s.id));
      for (const id of [...this.sessions.keys()]) if (!ids.has(id)) this.#removeMember(id);
      for (const member of current) {
        if (this.sessions.has(member.id)) continue;
        this.sessions.set(member.id, member);
        this.emit('entered', { sessionId: member.id, user: member.user, isSelf: false });
        if (!this.sfuEnabled) await this.#mesh.offer(member.id, this.#local);
      }
    } catch (e) {
      this.#fail(e);
    }
  }

  #onResumeFailed(sessionId: string, error: MooyahoError): void {
    // The old session is gone (and with it our channel membership): start clean.
    const channel = this.channelId;
    this.#reset();
    this.emit('error', error);
    if (channel) this.emit('channelClosed', { channel });
    this.emit('connected', { sessionId });
  }

  // ---- internals --------------------------------------------------------------------------

  async #loadSessions(): Promise<void> {
    const sessions = await this.getSessions();
    this.sessions.clear();
    for (const session of sessions) this.sessions.set(session.id, session);
  }

  #startSfu(): Sfu {
    const sfu = new Sfu(
      this.#rtc,
      {
      request: (m) => this.#socket.request(m),
      // Only trickled candidates go this way. The node is ICE-lite: it learns our address from
      // our connectivity checks, so a candidate lost to a dropped socket costs nothing and is
      // not worth an `error` event (anything else that fails still is).
      send: (m) => this.#socket.request(m).catch((e: unknown) => {
        if (!(e instanceof MooyahoError && e.code === 'disconnected')) this.#fail(e);
      }),
      onTrack: (id, track) => this.#addRemoteTrack(id, track),
      onTrackEnded: (id, track) => this.#removeRemoteTrack(id, track),
      onPublishConnected: (peer) => {
        this.emit('sfuPeerConnected', { peer });
        this.#sfuConnected('publish');
      },
      onSubscribeConnected: (peer) => {
        this.emit('peerConnected', { sessionId: null, peer });
        this.#sfuConnected('subscribe');
        this.#retellWishes();
      },
      onFailed: (side, layer) => {
        if (this.#sfu !== sfu) return;
        // Say so (a firewall blocking the node's UDP looks like this), then recover, backing
        // off across failures that never reconnected, and give up after a few.
        const why = layer === 'ice'
          ? 'no network path to the media node worked (ICE): its UDP port may be blocked or its announced address unreachable'
          : 'the secure (DTLS) handshake with the media node failed';
        this.#sfuFailures += 1;
        if (this.#sfuFailures > SFU_MAX_FAILED_RECOVERIES) {
          this.#sfu?.close();
          this.#sfu = null;
          this.#sfuRecovery = { generation: this.#sfuRecovery.generation + 1, awaiting: null };
          this.emit('error', new MooyahoError('media_connection_failed', `the SFU ${side} connection failed: ${why}; gave up after ${SFU_MAX_FAILED_RECOVERIES} attempts (leave and enter the channel to try again)`));
          return;
        }
        this.emit('error', new MooyahoError('media_connection_failed', `the SFU ${side} connection failed: ${why}; reconnecting`));
        void this.#recoverSfu('failed', this.#sfuFailures > 1 ? backoffMs(this.#sfuFailures - 2) : 0);
      },
      },
      this.config.simulcast ?? true,
    );
    this.#sfu = sfu;
    if (this.#local && this.#sfuRecovery.awaiting === null) {
      void this.#publishOn(sfu, this.#local);
    }
    return sfu;
  }

  /**
   * Publishes `local` on `sfu`, sending the publish again after a dropped socket or a timeout
   * (see `PUBLISH_RETRYABLE`) with backoff while `sfu` is still the channel's connection; a
   * refusal, or the last attempt's failure, is an `error` event.
   */
  async #publishOn(sfu: Sfu, local: MediaStream): Promise<void> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        await sfu.publish(local);
        return;
      } catch (e) {
        const retryable = e instanceof MooyahoError && PUBLISH_RETRYABLE.has(e.code);
        if (this.#sfu !== sfu) return; // superseded (left, recovered): nothing to report
        if (!retryable || attempt >= PUBLISH_ATTEMPTS) {
          this.#fail(e);
          return;
        }
        await new Promise((r) => setTimeout(r, backoffMs(attempt - 1)));
        if (this.#sfu !== sfu || sfu.publisher) return;
      }
    }
  }

  /**
   * Rebuilds the SFU PeerConnections, with no application code: after `sfuRestart` (the channel
   * moved to another room: drop both, publish again, take the new subscribe offers) or when one
   * of them went `failed` (the node still holds this session's transports, so leave and re-enter
   * the channel to get fresh ones, then publish again). A failed attempt (e.g. `sfu_unavailable`
   * while no node can take the channel) is retried with backoff; a newer recovery supersedes it.
   */
  async #recoverSfu(reason: 'sfuRestart' | 'failed', firstDelayMs = 0): Promise<void> {
    const generation = ++this.#sfuRecovery.generation;
    const channel = this.channelId;
    const current = () => this.#sfuRecovery.generation === generation && this.channelId === channel && channel !== '';
    if (firstDelayMs > 0) {
      this.#sfu?.close();
      this.#sfu = null;
      await new Promise((r) => setTimeout(r, firstDelayMs));
    }
    for (let attempt = 1; current(); attempt += 1) {
      this.emit('reconnecting', { what: 'sfu', reason, attempt });
      try {
        this.#sfu?.close();
        this.#sfu = null;
        this.#sfuRecovery.awaiting = this.#local ? 'publish' : 'subscribe';
        if (reason === 'failed') {
          await this.#socket.request({ type: 'leave' });
          if (!current()) return;
          await this.#socket.request({ type: 'enter', channel });
          if (!current()) return;
        }
        const sfu = this.#startSfu();
        if (this.#local) await sfu.publish(this.#local);
        return;
      } catch (e) {
        if (!current()) return;
        this.#fail(e);
        await new Promise((r) => setTimeout(r, backoffMs(attempt - 1)));
      }
    }
  }

  /** A new subscribe PeerConnection may be on another node, which knows no wish yet. */
  #retellWishes(): void {
    for (const [sessionId, wish] of this.#wishes) {
      const message: Record<string, unknown> = { type: 'setSubscription', sessionId, video: wish.video };
      if (wish.audio !== undefined) message['audio'] = wish.audio;
      this.#socket.request(message).catch((e: unknown) => this.#fail(e));
    }
  }

  /** A new SFU PeerConnection connected: the recovery waiting for it is over. */
  #sfuConnected(side: 'publish' | 'subscribe'): void {
    if (this.#sfuRecovery.awaiting !== side) return;
    this.#sfuRecovery.awaiting = null;
    this.#sfuFailures = 0;
    this.emit('reconnected', { sessionId: this.sessionId ?? '', what: 'sfu' });
  }

  #removeMember(sessionId: string): void {
    this.#wishes.delete(sessionId);
    if (!this.sessions.delete(sessionId)) return;
    this.#mesh.close(sessionId);
    this.#dropStream(sessionId);
    this.emit('left', { sessionId });
  }

  #addRemoteTrack(sessionId: string, track: MediaStreamTrack): void {
    let stream = this.remoteStreams.get(sessionId);
    if (!stream) {
      stream = new MediaStream();
      this.remoteStreams.set(sessionId, stream);
    }
    // One track per kind: a renegotiated track replaces the old one.
    for (const old of stream.getTracks()) if (old.kind === track.kind && old !== track) stream.removeTrack(old);
    if (!stream.getTracks().includes(track)) stream.addTrack(track);
    this.emit('remoteStreamChanged', { sessionId });
  }

  #removeRemoteTrack(sessionId: string, track: MediaStreamTrack): void {
    const stream = this.remoteStreams.get(sessionId);
    if (!stream) return;
    stream.removeTrack(track);
    if (stream.getTracks().length === 0) this.remoteStreams.delete(sessionId);
    this.emit('remoteStreamChanged', { sessionId });
  }

  #dropStream(sessionId: string): void {
    if (this.remoteStreams.delete(sessionId)) this.emit('remoteStreamChanged', { sessionId });
  }

  /** Forgets everything tied to the channel: peers, SFU, streams, members (bug 12). */
  #reset(): void {
    this.#mesh.closeAll();
    this.#sfu?.close();
    this.#sfu = null;
    this.#sfuRecovery = { generation: this.#sfuRecovery.generation + 1, awaiting: null };
    this.#sfuFailures = 0;
    const streams = [...this.remoteStreams.keys()];
    this.remoteStreams.clear();
    for (const sessionId of streams) this.emit('remoteStreamChanged', { sessionId });
    this.sessions.clear();
    this.#incoming.clear();
    this.#wishes.clear();
    this.channelId = '';
    this.sfuEnabled = false;
    this.#entering = null;
  }

  #settleCall(sessionId: string, error?: MooyahoError): void {
    const call = this.#calls.get(sessionId);
    if (!call) return;
    this.#calls.delete(sessionId);
    clearTimeout(call.timer);
    if (error) call.reject(error);
    else call.resolve();
  }

  #fail(e: unknown): void {
    this.emit('error', e instanceof MooyahoError ? e : new MooyahoError('webrtc', String(e)));
  }
}

/**
 * The video wish for an element rendered `width` × `height` device pixels (adaptive stream):
 * the smallest of the SDK's layers (¼, ½, full of a 720p camera) that is at least as large as
 * the element's longer side (never upscaled): no area → `off`; ≤ 320 → `low`; ≤ 640 →
 * `medium`; else `high`.
 */
export function qualityForSize(width: number, height: number): VideoQuality {
  const longer = Math.max(width, height);
  if (!(width > 0 && height > 0)) return 'off';
  if (longer <= 320) return 'low';
  if (longer <= 640) return 'medium';
  return 'high';
}
