// src/events.ts
var Emitter = class {
  #listeners = /* @__PURE__ */ new Map();
  addEventListener(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.#listeners.set(type, set);
    }
    set.add(listener);
  }
  removeEventListener(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }
  emit(type, payload) {
    for (const listener of [...this.#listeners.get(type) ?? []]) {
      try {
        listener(payload);
      } catch (e) {
        console.error(`mooyaho: "${type}" listener threw`, e);
      }
    }
  }
  removeAllListeners() {
    this.#listeners.clear();
  }
};

// src/mesh.ts
var PeerLink = class {
  constructor(sessionId, config, io) {
    this.sessionId = sessionId;
    this.pc = new RTCPeerConnection(config);
    this.pc.onicecandidate = (e) => {
      const candidate = e.candidate ? e.candidate.toJSON() : null;
      io.request({ type: "candidate", to: sessionId, candidate }).catch((error) => {
        if (!this.#closed) io.onError(error, sessionId);
      });
    };
    this.pc.ontrack = (e) => io.onTrack(sessionId, e.track);
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (state === "connected") {
        io.onConnected(sessionId, this.pc);
        const dtls = this.pc.getReceivers()[0]?.transport;
        if (dtls) {
          dtls.onstatechange = () => {
            if ((dtls.state === "closed" || dtls.state === "failed") && !this.#closed) io.onFailed(sessionId);
          };
        }
      }
      if (state === "failed" && !this.#closed) io.onFailed(sessionId);
    };
  }
  sessionId;
  pc;
  #queued = [];
  #closed = false;
  /** Offerer side: one transceiver per kind, sending what we have and receiving either way. */
  async createOffer(local) {
    for (const kind of ["audio", "video"]) {
      const track = local?.getTracks().find((t) => t.kind === kind);
      if (track && local) this.pc.addTransceiver(track, { direction: "sendrecv", streams: [local] });
      else this.pc.addTransceiver(kind, { direction: "recvonly" });
    }
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    return this.pc.localDescription?.sdp ?? "";
  }
  /** Answerer side: attaches local tracks to the offered transceivers. */
  async answerOffer(sdp, local) {
    await this.pc.setRemoteDescription({ type: "offer", sdp });
    for (const transceiver of this.pc.getTransceivers()) {
      const kind = transceiver.receiver.track.kind;
      const track = local?.getTracks().find((t) => t.kind === kind);
      if (track && local) {
        await transceiver.sender.replaceTrack(track);
        transceiver.sender.setStreams(local);
        transceiver.direction = "sendrecv";
      } else {
        transceiver.direction = "recvonly";
      }
    }
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    await this.#flush();
    return this.pc.localDescription?.sdp ?? "";
  }
  async acceptAnswer(sdp) {
    if (this.pc.signalingState !== "have-local-offer") return;
    await this.pc.setRemoteDescription({ type: "answer", sdp });
    await this.#flush();
  }
  async addCandidate(candidate) {
    if (!this.pc.remoteDescription) {
      this.#queued.push(candidate);
      return;
    }
    await this.#apply(candidate);
  }
  close() {
    this.#closed = true;
    this.#queued = [];
    this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
  async #flush() {
    const queued = this.#queued;
    this.#queued = [];
    for (const candidate of queued) await this.#apply(candidate);
  }
  async #apply(candidate) {
    if (this.#closed) return;
    try {
      await (candidate ? this.pc.addIceCandidate(candidate) : this.pc.addIceCandidate());
    } catch (e) {
      console.warn("mooyaho: ignoring ICE candidate", e);
    }
  }
};
var Mesh = class {
  constructor(config, io) {
    this.config = config;
    this.io = io;
  }
  config;
  io;
  peers = /* @__PURE__ */ new Map();
  /** Candidates from sessions we have no link with yet. */
  #early = /* @__PURE__ */ new Map();
  /** Offers to `to` (mesh: to a newcomer; direct call: the callee). Rejects if the server refuses. */
  async offer(to, local) {
    this.close(to);
    const link = this.#link(to);
    const sdp = await link.createOffer(local);
    await this.io.request({ type: "call", to, sdp });
  }
  /** Answers an offer from `from` (mesh member, or an accepted direct call). */
  async answer(from, sdp, local) {
    this.close(from, { keepEarly: true });
    const link = this.#link(from);
    const early = this.#early.get(from) ?? [];
    this.#early.delete(from);
    for (const candidate of early) await link.addCandidate(candidate);
    const answer = await link.answerOffer(sdp, local);
    await this.io.request({ type: "answer", to: from, sdp: answer });
  }
  async answered(from, sdp) {
    await this.peers.get(from)?.acceptAnswer(sdp);
  }
  async candidate(from, candidate) {
    const link = this.peers.get(from);
    if (link) {
      await link.addCandidate(candidate);
      return;
    }
    const early = this.#early.get(from) ?? [];
    if (early.length < 200) early.push(candidate);
    this.#early.set(from, early);
  }
  /** Closes the link with `sessionId`; true if there was one. */
  close(sessionId, options = {}) {
    if (!options.keepEarly) this.#early.delete(sessionId);
    const link = this.peers.get(sessionId);
    if (!link) return false;
    this.peers.delete(sessionId);
    link.close();
    return true;
  }
  closeAll() {
    for (const id of [...this.peers.keys()]) this.close(id);
    this.#early.clear();
  }
  #link(sessionId) {
    const link = new PeerLink(sessionId, this.config, this.io);
    this.peers.set(sessionId, link);
    return link;
  }
};

// src/sfu.ts
var LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 15e4 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 5e5 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 15e5 }
];
function simulcastEncodings(width, height) {
  const pixels = width * height;
  const layers = pixels >= 960 * 540 ? LAYERS : pixels >= 480 * 270 ? LAYERS.slice(1) : [];
  return layers.map((l) => ({ ...l }));
}
var Sfu = class {
  constructor(config, io, simulcast = true) {
    this.config = config;
    this.io = io;
    this.simulcast = simulcast;
  }
  config;
  io;
  simulcast;
  publisher = null;
  subscriber = null;
  /** Re-offers are applied one at a time, in arrival order. */
  #subscribeChain = Promise.resolve();
  /** Publish encoding changes (dynacast) are applied one at a time, in arrival order. */
  #parametersChain = Promise.resolve();
  /** Our publish candidates, held until the SFU accepted the publish offer. */
  #outgoing = [];
  /** Which session each received track belongs to (from its stream id). */
  #trackSession = /* @__PURE__ */ new Map();
  #closed = false;
  /** Publishes the local tracks. Rejects with the server's error (e.g. `sfu_unavailable`). */
  async publish(local) {
    const pc = new RTCPeerConnection(this.config);
    this.publisher = pc;
    for (const track of local.getTracks()) {
      const init = { direction: "sendonly", streams: [local] };
      const camera = track.kind === "video" && track.contentHint !== "detail" && track.contentHint !== "text";
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
      else this.io.send({ type: "candidate", isSFU: true, candidate });
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") this.io.onPublishConnected(pc);
      if (pc.connectionState === "failed") this.io.onFailed("publish", failedLayer(pc));
    };
    await pc.setLocalDescription(await pc.createOffer());
    let reply;
    try {
      reply = await this.io.request({ type: "call", isSFU: true, sdp: pc.localDescription?.sdp ?? "" });
    } catch (e) {
      pc.onicecandidate = pc.onconnectionstatechange = null;
      pc.close();
      if (this.publisher === pc) this.publisher = null;
      throw e;
    }
    if (reply.type === "answered") await this.answered(String(reply["sdp"]));
    const held = this.#outgoing ?? [];
    this.#outgoing = null;
    for (const candidate of held) this.io.send({ type: "candidate", isSFU: true, candidate });
  }
  async answered(sdp) {
    if (this.publisher?.signalingState === "have-local-offer") {
      await this.publisher.setRemoteDescription({ type: "answer", sdp });
    }
  }
  /** A (re-)offer of the subscribe PeerConnection. */
  offered(sdp) {
    this.#subscribeChain = this.#subscribeChain.then(() => this.#answer(sdp)).catch((e) => {
      console.error("mooyaho: SFU re-offer failed", e);
    });
    return this.#subscribeChain;
  }
  /**
   * Dynacast: the node says which layers of our video on m-line `mid` anyone consumes (by rid,
   * or by index for encodings without one); the others are set `active: false`, so nobody's
   * unwatched 720p is encoded, and set active again when needed. Applied one at a time (a
   * sender takes one `setParameters` at once), each against the sender's current parameters.
   */
  subscribedQualities(mid, qualities, layers) {
    this.#parametersChain = this.#parametersChain.then(async () => {
      const sender = this.publisher?.getTransceivers().find((t) => t.mid === mid)?.sender;
      if (!sender) return;
      const parameters = sender.getParameters();
      const encodings = parameters.encodings ?? [];
      if (encodings.length < 2) return;
      const wanted = encodings.map((e, i) => e.rid ? qualities.includes(e.rid) : layers.includes(i));
      if (!wanted.some(Boolean)) wanted[0] = true;
      if (encodings.every((e, i) => (e.active ?? true) === wanted[i])) return;
      encodings.forEach((e, i) => {
        e.active = wanted[i];
      });
      await sender.setParameters(parameters);
    }).catch((e) => {
      console.error("mooyaho: applying subscribedQualities failed", e);
    });
    return this.#parametersChain;
  }
  /** SFU candidates carry no session; route them by ICE username fragment. */
  async candidate(candidate) {
    const ufrag = candidate?.usernameFragment;
    const pcs = [this.publisher, this.subscriber].filter((pc) => pc !== null);
    const target = pcs.find((pc) => ufrag && pc.remoteDescription?.sdp.includes(`a=ice-ufrag:${ufrag}`)) ?? this.publisher;
    if (!target?.remoteDescription) return;
    await (candidate ? target.addIceCandidate(candidate) : target.addIceCandidate()).catch(() => void 0);
  }
  /** The PeerConnections are closed: nothing more will happen on them. */
  get closed() {
    return this.#closed;
  }
  close() {
    this.#closed = true;
    for (const pc of [this.publisher, this.subscriber]) {
      if (!pc) continue;
      pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = null;
      pc.close();
    }
    this.publisher = this.subscriber = null;
    this.#trackSession.clear();
  }
  async #answer(sdp) {
    if (this.#closed) return;
    const pc = this.subscriber ?? this.#createSubscriber();
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await this.io.request({ type: "answer", isSFU: true, sdp: pc.localDescription?.sdp ?? "" });
    const receiving = new Set(
      pc.getTransceivers().filter((t) => t.currentDirection === "recvonly" || t.currentDirection === "sendrecv").map((t) => t.receiver.track)
    );
    for (const [track, session] of this.#trackSession) {
      if (!receiving.has(track)) {
        this.#trackSession.delete(track);
        this.io.onTrackEnded(session, track);
      }
    }
  }
  #createSubscriber() {
    const pc = new RTCPeerConnection(this.config);
    this.subscriber = pc;
    pc.onicecandidate = (e) => {
      this.io.send({ type: "candidate", isSFU: true, candidate: e.candidate ? e.candidate.toJSON() : null });
    };
    pc.ontrack = (e) => {
      const session = e.streams[0]?.id;
      if (!session) return;
      this.#trackSession.set(e.track, session);
      this.io.onTrack(session, e.track);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") this.io.onSubscribeConnected(pc);
      if (pc.connectionState === "failed") this.io.onFailed("subscribe", failedLayer(pc));
    };
    return pc;
  }
};
function failedLayer(pc) {
  return pc.iceConnectionState === "failed" || pc.iceConnectionState === "disconnected" ? "ice" : "dtls";
}

// src/types.ts
var MooyahoError = class extends Error {
  code;
  /** The request type that failed, when there was one. */
  request;
  constructor(code, message, request) {
    super(message);
    this.name = "MooyahoError";
    this.code = code;
    this.request = request;
  }
};

// src/socket.ts
function iceServersOf(frame) {
  const servers = frame["iceServers"];
  if (!Array.isArray(servers)) return [];
  return servers.filter((s) => typeof s === "object" && s !== null && "urls" in s);
}
var MAX_BACKOFF_MS = 1e4;
var RETRYABLE = /* @__PURE__ */ new Set(["disconnected", "timeout", "unavailable", "rate_limited"]);
var SignalingSocket = class {
  constructor(url, handlers, options, joinToken) {
    this.url = url;
    this.handlers = handlers;
    this.options = options;
    this.joinToken = joinToken;
  }
  url;
  handlers;
  options;
  joinToken;
  /** The live WebSocket (null while disconnected). Public so tests can drop it. */
  ws = null;
  /** The session this client holds; unchanged across successful resumes. */
  sessionId = null;
  #token = null;
  #pending = /* @__PURE__ */ new Map();
  #nextRequestId = 1;
  #heartbeat = null;
  #reconnecting = false;
  #disposed = false;
  #connecting = null;
  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.sessionId !== null;
  }
  /** Opens the first connection; resolves the new session id, rejects on failure or timeout. */
  connect() {
    if (this.#disposed) return Promise.reject(new MooyahoError("invalid_state", "disposed"));
    if (this.sessionId !== null && this.connected) return Promise.resolve(this.sessionId);
    this.#connecting ??= this.#open(this.joinToken).then(
      ({ id, token }) => {
        this.sessionId = id;
        this.#token = token;
        this.#connecting = null;
        return id;
      },
      (e) => {
        this.#connecting = null;
        throw e;
      }
    );
    return this.#connecting;
  }
  /** Sends a request and resolves its reply (`ack` for requests with no natural reply). */
  request(message, timeoutMs = this.options.requestTimeoutMs) {
    const type = String(message["type"]);
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new MooyahoError("disconnected", `cannot send ${type}: not connected`, type));
    }
    const requestId = this.#nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(requestId);
        reject(new MooyahoError("timeout", `no reply to ${type} within ${timeoutMs} ms`, type));
      }, timeoutMs);
      this.#pending.set(requestId, { type, resolve, reject, timer });
      ws.send(JSON.stringify({ ...message, requestId }));
    });
  }
  /** Fire-and-forget: a refusal is still reported, through `onError`. */
  send(message) {
    this.request(message).catch((e) => this.handlers.onError(e));
  }
  /** Closes the socket as if the network dropped it; the client reconnects and resumes. */
  drop() {
    this.ws?.close();
  }
  /** Closes for good: no reconnect. */
  dispose() {
    this.#disposed = true;
    const ws = this.ws;
    this.#detach(new MooyahoError("disconnected", "disposed"));
    ws?.close();
  }
  /** One WebSocket up to its `connected` frame. */
  #open(joinToken) {
    const url = joinToken === void 0 ? this.url : `${this.url}&token=${encodeURIComponent(joinToken)}`;
    return new Promise((resolve, reject) => {
      let settled = false;
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (e) {
        reject(new MooyahoError("disconnected", `cannot open ${this.url}: ${String(e)}`));
        return;
      }
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.onmessage = ws.onclose = ws.onerror = null;
        ws.close();
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new MooyahoError("timeout", `no "connected" within ${this.options.requestTimeoutMs} ms`)),
        this.options.requestTimeoutMs
      );
      ws.onerror = () => fail(new MooyahoError("disconnected", `WebSocket to ${this.url} failed`));
      ws.onclose = () => fail(new MooyahoError("disconnected", `WebSocket to ${this.url} closed`));
      ws.onmessage = (event) => {
        const frame = parse(event.data);
        if (!frame) return;
        if (frame.type === "error") {
          fail(new MooyahoError(String(frame["code"]), String(frame["message"])));
          return;
        }
        if (frame.type !== "connected" || settled) return;
        settled = true;
        clearTimeout(timer);
        this.handlers.onIceServers(iceServersOf(frame));
        this.#attach(ws);
        resolve({ id: String(frame["id"]), token: String(frame["token"]) });
      };
    });
  }
  #attach(ws) {
    this.ws = ws;
    ws.onmessage = (event) => {
      const frame = parse(event.data);
      if (frame) this.#dispatch(frame);
    };
    ws.onerror = null;
    ws.onclose = () => {
      if (this.ws === ws) this.#lost();
    };
    this.#heartbeat = setInterval(() => {
      this.request({ type: "ping" }, this.options.heartbeatMs).catch(() => {
        if (this.ws === ws) {
          this.#lost();
          ws.close();
        }
      });
    }, this.options.heartbeatMs);
  }
  #dispatch(frame) {
    const id = frame.requestId;
    const pending = typeof id === "number" ? this.#pending.get(id) : void 0;
    if (typeof id === "number" && !pending) return;
    if (pending && typeof id === "number") {
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      if (frame.type === "error") {
        pending.reject(new MooyahoError(String(frame["code"]), String(frame["message"]), pending.type));
      } else {
        pending.resolve(frame);
      }
      return;
    }
    if (frame.type === "error") {
      this.handlers.onError(new MooyahoError(String(frame["code"]), String(frame["message"])));
      return;
    }
    if (frame.type === "resumeToken") {
      this.#token = String(frame["token"]);
      return;
    }
    this.handlers.onEvent(frame);
  }
  /** Forgets the current socket: pending requests fail now rather than at their timeouts. */
  #detach(error) {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    if (this.ws) this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
    this.ws = null;
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.#pending.clear();
  }
  #lost() {
    this.#detach(new MooyahoError("disconnected", "the signaling socket closed"));
    if (!this.#disposed && !this.#reconnecting && this.sessionId !== null) void this.#reconnect();
  }
  async #reconnect() {
    this.#reconnecting = true;
    try {
      for (let attempt = 0; !this.#disposed; attempt++) {
        const base = Math.min(MAX_BACKOFF_MS, 250 * 2 ** attempt);
        await sleep(base / 2 + Math.random() * (base / 2));
        if (this.#disposed) return;
        let fresh;
        try {
          fresh = await this.#open();
        } catch {
          continue;
        }
        if (this.#disposed) {
          this.ws?.close();
          return;
        }
        const previous = this.sessionId;
        try {
          const reply = await this.request({ type: "reuseId", id: previous, token: this.#token });
          this.#token = String(reply["token"]);
          this.handlers.onIceServers(iceServersOf(reply));
          this.handlers.onResumed(String(reply["id"]), reply);
          return;
        } catch (e) {
          const error = e;
          if (RETRYABLE.has(error.code)) {
            const ws = this.ws;
            this.#detach(error);
            ws?.close();
            continue;
          }
          this.sessionId = fresh.id;
          this.#token = fresh.token;
          this.handlers.onResumeFailed(fresh.id, error);
          return;
        }
      }
    } finally {
      this.#reconnecting = false;
    }
  }
};
function parse(data) {
  if (typeof data !== "string") return null;
  try {
    const frame = JSON.parse(data);
    if (frame && typeof frame === "object" && typeof frame.type === "string") {
      return frame;
    }
  } catch {
  }
  return null;
}
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// src/Mooyaho.ts
var CALL_TIMEOUT_MS = 6e4;
var SFU_RETRY_FIRST_MS = 1e3;
var SFU_RETRY_MAX_MS = 15e3;
var SFU_MAX_FAILED_RECOVERIES = 5;
var PUBLISH_ATTEMPTS = 5;
var PUBLISH_RETRYABLE = /* @__PURE__ */ new Set(["disconnected", "timeout", "unavailable", "rate_limited"]);
function backoffMs(step) {
  const delay = Math.min(SFU_RETRY_FIRST_MS * 2 ** step, SFU_RETRY_MAX_MS);
  return delay * (0.75 + Math.random() * 0.5);
}
var Mooyaho = class extends Emitter {
  config;
  /** The current channel id, or '' outside a channel (the original's convention). */
  channelId = "";
  sfuEnabled = false;
  /** Members of the current channel, this client included. */
  sessions = /* @__PURE__ */ new Map();
  /** One stream per remote session, owned by the SDK (tracks are added and removed in place). */
  remoteStreams = /* @__PURE__ */ new Map();
  #socket;
  #rtc;
  #local = null;
  #mesh;
  #sfu = null;
  /** Settles once `enter` has finished and the member list is loaded. */
  #entering = null;
  #calls = /* @__PURE__ */ new Map();
  /** Direct calls ringing here, so a second offer from the same caller replaces the first. */
  #incoming = /* @__PURE__ */ new Map();
  #sfuRecovery = { generation: 0, awaiting: null };
  /** SFU PeerConnection failures since the SFU last (re)connected. */
  #sfuFailures = 0;
  /** `setSubscription` wishes by publisher, told again to each new subscribe PeerConnection's node. */
  #wishes = /* @__PURE__ */ new Map();
  constructor(config) {
    super();
    this.config = { ...config };
    this.#rtc = { iceServers: config.iceServers ?? [], iceTransportPolicy: config.iceTransportPolicy ?? "all" };
    const base = config.url.replace(/^http/, "ws").replace(/\/+$/, "");
    const url = `${base}/websocket?allowDirectCall=${config.allowDirectCall ? "true" : "false"}`;
    this.#socket = new SignalingSocket(
      url,
      {
        onEvent: (frame) => void this.#onEvent(frame).catch((e) => this.#fail(e)),
        onResumed: (sessionId) => void this.#onResumed(sessionId),
        onResumeFailed: (sessionId, error) => this.#onResumeFailed(sessionId, error),
        onError: (error) => this.emit("error", error),
        onIceServers: (servers) => this.#useIceServers(servers)
      },
      { requestTimeoutMs: config.requestTimeoutMs ?? 1e4, heartbeatMs: config.heartbeatMs ?? 5e3 },
      config.token
    );
    this.#mesh = new Mesh(this.#rtc, {
      request: (m) => this.#socket.request(m),
      onError: (error, sessionId) => {
        if (error.code === "forbidden" && this.#calls.has(sessionId)) return;
        this.emit("error", error);
      },
      onTrack: (id, track) => this.#addRemoteTrack(id, track),
      onConnected: (sessionId, peer) => this.emit("peerConnected", { sessionId, peer }),
      onFailed: (sessionId) => this.hangUp(sessionId)
    });
  }
  /** The signaling socket (tests use `socket.drop()` to simulate a network drop). */
  get socket() {
    return this.#socket;
  }
  get sessionId() {
    return this.#socket.sessionId;
  }
  /** Peer-to-peer PeerConnections by remote session id. */
  get peers() {
    return new Map([...this.#mesh.peers].map(([id, link]) => [id, link.pc]));
  }
  /** The SFU PeerConnections, when in an SFU channel. */
  get sfuPeers() {
    return { publisher: this.#sfu?.publisher ?? null, subscriber: this.#sfu?.subscriber ?? null };
  }
  get sessionsArray() {
    return [...this.sessions.values()];
  }
  /** Opens the socket; resolves the session id. Rejects on failure or timeout. */
  async connect() {
    const id = await this.#socket.connect();
    this.emit("connected", { sessionId: id });
    return id;
  }
  /** Camera/microphone, cached. Call before `enter`/`directCall`: mesh tracks go into PCs created later. */
  async createUserMedia(constraints = { audio: true, video: true }) {
    if (this.#local) return this.#local;
    if (!navigator.mediaDevices) {
      throw new MooyahoError("insecure_context", "camera and microphone need a secure context: serve the page over HTTPS (or from localhost)");
    }
    const local = await navigator.mediaDevices.getUserMedia(constraints);
    this.#local = local;
    if (this.#sfu && !this.#sfu.publisher) void this.#publishOn(this.#sfu, local);
    return local;
  }
  getMyStream() {
    return this.#local;
  }
  getRemoteStreamById(sessionId) {
    return this.remoteStreams.get(sessionId) ?? null;
  }
  /** Binds a user to this session (only when the server runs with anonymous mode on). */
  async integrateUser(user) {
    const reply = await this.#socket.request({ type: "integrateUser", user });
    this.#useIceServers(iceServersOf(reply));
    return reply["user"];
  }
  /** The server hands TURN credentials to integrated sessions (connect with a join token,
   * `integrated`, resume): they go after the app's own `iceServers` into every new
   * PeerConnection's configuration. A frame without any leaves the last ones in place. */
  #useIceServers(servers) {
    if (servers.length === 0) return;
    this.#rtc.iceServers = [...this.config.iceServers ?? [], ...servers];
  }
  /** Enters a channel. Resolves once entered and the member list is loaded; rejects with the server's error. */
  enter(channelId) {
    const entering = (async () => {
      const reply = await this.#socket.request({ type: "enter", channel: channelId });
      if (this.channelId && this.channelId !== channelId) this.#reset();
      this.channelId = String(reply["channel"]);
      this.sfuEnabled = reply["sfuEnabled"] === true;
      await this.#loadSessions();
      this.emit("enterSuccess", { channel: this.channelId, sfuEnabled: this.sfuEnabled });
      if (this.sfuEnabled && !this.#sfu) this.#startSfu();
    })();
    this.#entering = entering.catch(() => void 0);
    return entering;
  }
  /** Leaves the channel and releases everything tied to it. */
  async leave() {
    const wasIn = this.channelId !== "";
    this.#reset();
    if (wasIn) await this.#socket.request({ type: "leave" });
  }
  /** Calls a session outside any shared channel. Resolves when it accepts, rejects when it declines. */
  async directCall(sessionId) {
    if (!this.config.allowDirectCall) {
      throw new MooyahoError("invalid_state", "direct calls need `allowDirectCall: true`", "call");
    }
    this.#settleCall(sessionId, new MooyahoError("invalid_state", "superseded by a new call"));
    const answered = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#calls.delete(sessionId);
        this.hangUp(sessionId);
        reject(new MooyahoError("timeout", "the call was not answered", "call"));
      }, CALL_TIMEOUT_MS);
      this.#calls.set(sessionId, { resolve, reject, timer });
    });
    try {
      await this.#mesh.offer(sessionId, this.#local);
    } catch (e) {
      this.#settleCall(sessionId, e);
      this.#mesh.close(sessionId);
    }
    return answered;
  }
  /** Ends a peer-to-peer connection (a direct call, typically) and drops that session's stream. */
  hangUp(sessionId) {
    const had = this.#mesh.close(sessionId);
    this.#dropStream(sessionId);
    if (had) this.emit("peerDisconnected", { sessionId });
  }
  /** Announces a mute/camera change and applies it to the local tracks. */
  async updateMediaState(key, value) {
    const kind = key === "muted" ? "audio" : "video";
    for (const track of this.#local?.getTracks() ?? []) if (track.kind === kind) track.enabled = !value;
    if (this.channelId) await this.#socket.request({ type: "updateMediaState", key, value });
  }
  /**
   * In an SFU channel, what this client wants of `sessionId`'s media: `video` is the most it
   * wants (`high`, `medium`, `low` simulcast layer, or `off` for no video packets), `audio`
   * whether it wants the audio (omitted: unchanged). Resolves once the server acknowledged it;
   * rejects with the server's error (`invalid_message`, `session_not_found`, `sfu_unavailable`
   * while nobody publishes yet). The SDK tells the wish again after an SFU recovery.
   */
  async setSubscription(sessionId, wish) {
    const message = { type: "setSubscription", sessionId, video: wish.video };
    if (wish.audio !== void 0) message["audio"] = wish.audio;
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
  observeVideo(sessionId, element) {
    let size = { width: 0, height: 0 };
    let visible = true;
    let sent = null;
    let timer = null;
    let stopped = false;
    const tell = () => {
      timer = null;
      if (stopped) return;
      const quality = visible ? qualityForSize(size.width, size.height) : "off";
      if (quality === sent) return;
      sent = quality;
      this.setSubscription(sessionId, { video: quality }).catch(() => {
        sent = null;
        if (!stopped && timer === null) timer = setTimeout(tell, 2e3);
      });
    };
    const schedule = () => {
      if (timer === null && !stopped) timer = setTimeout(tell, 300);
    };
    const ratio = typeof devicePixelRatio === "number" ? devicePixelRatio : 1;
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
  async sendMessage(message) {
    const body = typeof message === "string" ? { type: "text", text: message } : { type: "custom", data: message };
    await this.#socket.request({ type: "message", message: body });
  }
  /** The channel's members, fresh from the server. */
  async getSessions() {
    const reply = await this.#socket.request({ type: "listSessions" });
    return reply["sessions"] ?? [];
  }
  /** Simulates a network drop (the original's name): the client reconnects and resumes. */
  manuallyDisconnect() {
    this.#socket.drop();
  }
  /** Closes everything; the instance cannot be used again. */
  dispose() {
    this.#reset();
    for (const id of [...this.#calls.keys()]) this.#settleCall(id, new MooyahoError("invalid_state", "disposed"));
    this.#socket.dispose();
    this.#local?.getTracks().forEach((t) => t.stop());
    this.#local = null;
    this.removeAllListeners();
  }
  // ---- server events ------------------------------------------------------------------------
  async #onEvent(frame) {
    const from = typeof frame["from"] === "string" ? frame["from"] : null;
    const sessionId = String(frame["sessionId"] ?? "");
    switch (frame.type) {
      case "entered": {
        const isSelf = sessionId === this.sessionId;
        const known = this.sessions.has(sessionId);
        this.sessions.set(sessionId, {
          id: sessionId,
          user: frame["user"],
          state: this.sessions.get(sessionId)?.state ?? { muted: false, videoOff: false }
        });
        this.emit("entered", { sessionId, user: frame["user"], isSelf });
        if (isSelf || known) return;
        if (this.#entering) await this.#entering;
        if (!this.sfuEnabled && this.channelId && this.sessions.has(sessionId)) {
          await this.#mesh.offer(sessionId, this.#local);
        }
        return;
      }
      case "left":
        this.#removeMember(sessionId);
        return;
      case "called":
        if (frame["isSFU"] === true) {
          if (this.#entering) await this.#entering;
          await this.#sfu?.offered(String(frame["sdp"]));
        } else if (from) await this.#onCalled(from, String(frame["sdp"]));
        return;
      case "answered":
        if (frame["isSFU"] === true) await this.#sfu?.answered(String(frame["sdp"]));
        else if (from) {
          await this.#mesh.answered(from, String(frame["sdp"]));
          this.#settleCall(from);
        }
        return;
      case "candidated": {
        const candidate = frame["candidate"] ?? null;
        if (frame["isSFU"] === true) await this.#sfu?.candidate(candidate);
        else if (from) await this.#mesh.candidate(from, candidate);
        return;
      }
      case "rejected": {
        const reason = typeof frame["reason"] === "string" ? frame["reason"] : null;
        if (!from) return;
        this.hangUp(from);
        this.#settleCall(from, new MooyahoError("rejected", reason ?? "the call was declined", "call"));
        this.emit("callRejected", { sessionId: from, reason });
        return;
      }
      case "messaged":
        this.emit("messaged", {
          sessionId,
          message: frame["message"],
          isSelf: sessionId === this.sessionId
        });
        return;
      case "updatedMediaState": {
        const key = frame["key"];
        const value = frame["value"] === true;
        const member = this.sessions.get(sessionId);
        if (member) member.state[key] = value;
        this.emit("updatedMediaState", { sessionId, key, value, isSelf: sessionId === this.sessionId });
        return;
      }
      case "activeSpeakers": {
        const list = Array.isArray(frame["speakers"]) ? frame["speakers"] : [];
        const speakers = list.flatMap((entry) => {
          const s = entry;
          if (typeof s?.sessionId !== "string" || typeof s.level !== "number") return [];
          return [{ sessionId: s.sessionId, level: s.level, isSelf: s.sessionId === this.sessionId }];
        });
        this.emit("activeSpeakersChanged", { speakers });
        return;
      }
      case "subscribedQualities": {
        const mid = frame["mid"];
        const qualities = frame["qualities"];
        const layers = frame["layers"];
        if (typeof mid !== "string" || !Array.isArray(qualities) || !Array.isArray(layers)) return;
        const rids = qualities.filter((q) => typeof q === "string");
        const indexes = layers.filter((l) => typeof l === "number");
        void this.#sfu?.subscribedQualities(mid, rids, indexes);
        this.emit("subscribedQualities", { mid, qualities: rids, layers: indexes });
        return;
      }
      case "channelClosed": {
        const channel = String(frame["channel"]);
        if (channel === this.channelId) this.#reset();
        this.emit("channelClosed", { channel });
        return;
      }
      case "integrated":
        this.#useIceServers(iceServersOf(frame));
        this.emit("integrated", { user: frame["user"] });
        return;
      case "sfuRestart": {
        const channel = String(frame["channel"]);
        if (channel !== this.channelId || !this.sfuEnabled) return;
        this.emit("sfuRestart", { channel });
        void this.#recoverSfu("sfuRestart");
        return;
      }
      default:
        return;
    }
  }
  async #onCalled(from, sdp) {
    if (this.#entering) await this.#entering;
    if (this.channelId && !this.sfuEnabled && this.sessions.has(from)) {
      await this.#mesh.answer(from, sdp, this.#local);
      return;
    }
    if (this.#mesh.peers.has(from)) {
      await this.#mesh.answer(from, sdp, this.#local);
      return;
    }
    if (!this.config.allowDirectCall) return;
    this.#incoming.set(from, sdp);
    let settled = false;
    const call = {
      sessionId: from,
      accept: async () => {
        if (settled) throw new MooyahoError("invalid_state", "this call was already answered or declined");
        settled = true;
        const offer = this.#incoming.get(from) ?? sdp;
        this.#incoming.delete(from);
        await this.#mesh.answer(from, offer, this.#local);
      },
      reject: (reason) => {
        if (settled) return;
        settled = true;
        this.#incoming.delete(from);
        this.#mesh.close(from);
        this.#socket.send(reason === void 0 ? { type: "reject", to: from } : { type: "reject", to: from, reason });
      }
    };
    this.emit("incomingCall", call);
  }
  async #onResumed(sessionId) {
    this.emit("reconnected", { sessionId, what: "socket" });
    if (!this.channelId) return;
    try {
      const current = await this.getSessions();
      const ids = new Set(current.map((s) => s.id));
      for (const id of [...this.sessions.keys()]) if (!ids.has(id)) this.#removeMember(id);
      for (const member of current) {
        if (this.sessions.has(member.id)) continue;
        this.sessions.set(member.id, member);
        this.emit("entered", { sessionId: member.id, user: member.user, isSelf: false });
        if (!this.sfuEnabled) await this.#mesh.offer(member.id, this.#local);
      }
    } catch (e) {
      this.#fail(e);
    }
  }
  #onResumeFailed(sessionId, error) {
    const channel = this.channelId;
    this.#reset();
    this.emit("error", error);
    if (channel) this.emit("channelClosed", { channel });
    this.emit("connected", { sessionId });
  }
  // ---- internals --------------------------------------------------------------------------
  async #loadSessions() {
    const sessions = await this.getSessions();
    this.sessions.clear();
    for (const session of sessions) this.sessions.set(session.id, session);
  }
  #startSfu() {
    const sfu = new Sfu(
      this.#rtc,
      {
        request: (m) => this.#socket.request(m),
        // Only trickled candidates go this way. The node is ICE-lite: it learns our address from
        // our connectivity checks, so a candidate lost to a dropped socket costs nothing and is
        // not worth an `error` event (anything else that fails still is).
        send: (m) => this.#socket.request(m).catch((e) => {
          if (!(e instanceof MooyahoError && e.code === "disconnected")) this.#fail(e);
        }),
        onTrack: (id, track) => this.#addRemoteTrack(id, track),
        onTrackEnded: (id, track) => this.#removeRemoteTrack(id, track),
        onPublishConnected: (peer) => {
          this.emit("sfuPeerConnected", { peer });
          this.#sfuConnected("publish");
        },
        onSubscribeConnected: (peer) => {
          this.emit("peerConnected", { sessionId: null, peer });
          this.#sfuConnected("subscribe");
          this.#retellWishes();
        },
        onFailed: (side, layer) => {
          if (this.#sfu !== sfu) return;
          const why = layer === "ice" ? "no network path to the media node worked (ICE): its UDP port may be blocked or its announced address unreachable" : "the secure (DTLS) handshake with the media node failed";
          this.#sfuFailures += 1;
          if (this.#sfuFailures > SFU_MAX_FAILED_RECOVERIES) {
            this.#sfu?.close();
            this.#sfu = null;
            this.#sfuRecovery = { generation: this.#sfuRecovery.generation + 1, awaiting: null };
            this.emit("error", new MooyahoError("media_connection_failed", `the SFU ${side} connection failed: ${why}; gave up after ${SFU_MAX_FAILED_RECOVERIES} attempts (leave and enter the channel to try again)`));
            return;
          }
          this.emit("error", new MooyahoError("media_connection_failed", `the SFU ${side} connection failed: ${why}; reconnecting`));
          void this.#recoverSfu("failed", this.#sfuFailures > 1 ? backoffMs(this.#sfuFailures - 2) : 0);
        }
      },
      this.config.simulcast ?? true
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
  async #publishOn(sfu, local) {
    for (let attempt = 1; ; attempt += 1) {
      try {
        await sfu.publish(local);
        return;
      } catch (e) {
        const retryable = e instanceof MooyahoError && PUBLISH_RETRYABLE.has(e.code);
        if (this.#sfu !== sfu) return;
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
  async #recoverSfu(reason, firstDelayMs = 0) {
    const generation = ++this.#sfuRecovery.generation;
    const channel = this.channelId;
    const current = () => this.#sfuRecovery.generation === generation && this.channelId === channel && channel !== "";
    if (firstDelayMs > 0) {
      this.#sfu?.close();
      this.#sfu = null;
      await new Promise((r) => setTimeout(r, firstDelayMs));
    }
    for (let attempt = 1; current(); attempt += 1) {
      this.emit("reconnecting", { what: "sfu", reason, attempt });
      try {
        this.#sfu?.close();
        this.#sfu = null;
        this.#sfuRecovery.awaiting = this.#local ? "publish" : "subscribe";
        if (reason === "failed") {
          await this.#socket.request({ type: "leave" });
          if (!current()) return;
          await this.#socket.request({ type: "enter", channel });
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
  #retellWishes() {
    for (const [sessionId, wish] of this.#wishes) {
      const message = { type: "setSubscription", sessionId, video: wish.video };
      if (wish.audio !== void 0) message["audio"] = wish.audio;
      this.#socket.request(message).catch((e) => this.#fail(e));
    }
  }
  /** A new SFU PeerConnection connected: the recovery waiting for it is over. */
  #sfuConnected(side) {
    if (this.#sfuRecovery.awaiting !== side) return;
    this.#sfuRecovery.awaiting = null;
    this.#sfuFailures = 0;
    this.emit("reconnected", { sessionId: this.sessionId ?? "", what: "sfu" });
  }
  #removeMember(sessionId) {
    this.#wishes.delete(sessionId);
    if (!this.sessions.delete(sessionId)) return;
    this.#mesh.close(sessionId);
    this.#dropStream(sessionId);
    this.emit("left", { sessionId });
  }
  #addRemoteTrack(sessionId, track) {
    let stream = this.remoteStreams.get(sessionId);
    if (!stream) {
      stream = new MediaStream();
      this.remoteStreams.set(sessionId, stream);
    }
    for (const old of stream.getTracks()) if (old.kind === track.kind && old !== track) stream.removeTrack(old);
    if (!stream.getTracks().includes(track)) stream.addTrack(track);
    this.emit("remoteStreamChanged", { sessionId });
  }
  #removeRemoteTrack(sessionId, track) {
    const stream = this.remoteStreams.get(sessionId);
    if (!stream) return;
    stream.removeTrack(track);
    if (stream.getTracks().length === 0) this.remoteStreams.delete(sessionId);
    this.emit("remoteStreamChanged", { sessionId });
  }
  #dropStream(sessionId) {
    if (this.remoteStreams.delete(sessionId)) this.emit("remoteStreamChanged", { sessionId });
  }
  /** Forgets everything tied to the channel: peers, SFU, streams, members (bug 12). */
  #reset() {
    this.#mesh.closeAll();
    this.#sfu?.close();
    this.#sfu = null;
    this.#sfuRecovery = { generation: this.#sfuRecovery.generation + 1, awaiting: null };
    this.#sfuFailures = 0;
    const streams = [...this.remoteStreams.keys()];
    this.remoteStreams.clear();
    for (const sessionId of streams) this.emit("remoteStreamChanged", { sessionId });
    this.sessions.clear();
    this.#incoming.clear();
    this.#wishes.clear();
    this.channelId = "";
    this.sfuEnabled = false;
    this.#entering = null;
  }
  #settleCall(sessionId, error) {
    const call = this.#calls.get(sessionId);
    if (!call) return;
    this.#calls.delete(sessionId);
    clearTimeout(call.timer);
    if (error) call.reject(error);
    else call.resolve();
  }
  #fail(e) {
    this.emit("error", e instanceof MooyahoError ? e : new MooyahoError("webrtc", String(e)));
  }
};
function qualityForSize(width, height) {
  const longer = Math.max(width, height);
  if (!(width > 0 && height > 0)) return "off";
  if (longer <= 320) return "low";
  if (longer <= 640) return "medium";
  return "high";
}
export {
  Mooyaho,
  MooyahoError,
  qualityForSize
};
