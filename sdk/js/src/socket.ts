// The signaling WebSocket: request/response correlated by `requestId`, an app-level heartbeat
// (browsers cannot see WebSocket pings, so a half-open TCP connection is only noticed this way),
// and reconnect with exponential backoff that resumes the same session with `reuseId`.

import { MooyahoError, type ServerFrame } from './types.js';

export interface SocketHandlers {
  /** Every frame that is not the reply to one of our requests. */
  onEvent(frame: ServerFrame): void;
  /** The socket dropped and `reuseId` restored the same session (same id, channel, user). */
  onResumed(sessionId: string, reply: ServerFrame): void;
  /** The socket came back but the old session could not be resumed; this is a fresh session. */
  onResumeFailed(sessionId: string, error: MooyahoError): void;
  /** An `error` frame nobody was waiting for, or a failure of a fire-and-forget message. */
  onError(error: MooyahoError): void;
  /** The server's TURN servers with fresh credentials (`connected` and `reuseIdSuccess` of an
   * integrated session). */
  onIceServers(servers: RTCIceServer[]): void;
}

/** The `iceServers` a server frame carries: a list of objects with `urls`, or none. */
export function iceServersOf(frame: ServerFrame): RTCIceServer[] {
  const servers = frame['iceServers'];
  if (!Array.isArray(servers)) return [];
  return servers.filter((s): s is RTCIceServer => typeof s === 'object' && s !== null && 'urls' in s);
}

export interface SocketOptions {
  requestTimeoutMs: number;
  heartbeatMs: number;
}

interface Pending {
  type: string;
  resolve(frame: ServerFrame): void;
  reject(error: MooyahoError): void;
  timer: ReturnType<typeof setTimeout>;
}

const MAX_BACKOFF_MS = 10_000;
/** Resume failures worth another attempt; anything else means the old session is gone. */
const RETRYABLE = new Set(['disconnected', 'timeout', 'unavailable', 'rate_limited']);

export class SignalingSocket {
  /** The live WebSocket (null while disconnected). Public so tests can drop it. */
  ws: WebSocket | null = null;
  /** The session this client holds; unchanged across successful resumes. */
  sessionId: string | null = null;
  #token: string | null = null;
  #pending = new Map<number, Pending>();
  #nextRequestId = 1;
  #heartbeat: ReturnType<typeof setInterval> | null = null;
  #reconnecting = false;
  #disposed = false;
  #connecting: Promise<string> | null = null;

  constructor(
    private readonly url: string,
    private readonly handlers: SocketHandlers,
    private readonly options: SocketOptions,
    /** A join token for the first connection only: reconnects resume with `reuseId`, whose
     * resume token is the proof (the join token may have expired by then). Kept out of error
     * messages. */
    private readonly joinToken?: string,
  ) {}

  get connected(): boolean {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.sessionId !== null;
  }

  /** Opens the first connection; resolves the new session id, rejects on failure or timeout. */
  connect(): Promise<string> {
    if (this.#disposed) return Promise.reject(new MooyahoError('invalid_state', 'disposed'));
    if (this.sessionId !== null && this.connected) return Promise.resolve(this.sessionId);
    this.#connecting ??= this.#open(this.joinToken).then(
      ({ id, token }) => {
        this.sessionId = id;
        this.#token = token;
        this.#connecting = null;
        return id;
      },
      (e: unknown) => {
        this.#connecting = null;
        throw e;
      },
    );
    return this.#connecting;
  }

  /** Sends a request and resolves its reply (`ack` for requests with no natural reply). */
  request(message: Record<string, unknown>, timeoutMs = this.options.requestTimeoutMs): Promise<ServerFrame> {
    const type = String(message['type']);
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new MooyahoError('disconnected', `cannot send ${type}: not connected`, type));
    }
    const requestId = this.#nextRequestId++;
    return new Promise<ServerFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(requestId);
        reject(new MooyahoError('timeout', `no reply to ${type} within ${timeoutMs} ms`, type));
      }, timeoutMs);
      this.#pending.set(requestId, { type, resolve, reject, timer });
      ws.send(JSON.stringify({ ...message, requestId }));
    });
  }

  /** Fire-and-forget: a refusal is still reported, through `onError`. */
  send(message: Record<string, unknown>): void {
    this.request(message).catch((e: MooyahoError) => this.handlers.onError(e));
  }

  /** Closes the socket as if the network dropped it; the client reconnects and resumes. */
  drop(): void {
    this.ws?.close();
  }

  /** Closes for good: no reconnect. */
  dispose(): void {
    this.#disposed = true;
    const ws = this.ws;
    this.#detach(new MooyahoError('disconnected', 'disposed'));
    ws?.close();
  }

  /** One WebSocket up to its `connected` frame. */
  #open(joinToken?: string): Promise<{ id: string; token: string }> {
    const url = joinToken === undefined ? this.url : `${this.url}&token=${encodeURIComponent(joinToken)}`;
    return new Promise((resolve, reject) => {
      let settled = false;
      let ws: WebSocket;
      try {
        ws = new WebSocket(url);
      } catch (e) {
        reject(new MooyahoError('disconnected', `cannot open ${this.url}: ${String(e)}`));
        return;
      }
      const fail = (error: MooyahoError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.onmessage = ws.onclose = ws.onerror = null;
        ws.close();
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new MooyahoError('timeout', `no "connected" within ${this.options.requestTimeoutMs} ms`)),
        this.options.requestTimeoutMs,
      );
      ws.onerror = () => fail(new MooyahoError('disconnected', `WebSocket to ${this.url} failed`));
      ws.onclose = () => fail(new MooyahoError('disconnected', `WebSocket to ${this.url} closed`));
      ws.onmessage = (event) => {
        const frame = parse(event.data);
        if (!frame) return;
        if (frame.type === 'error') {
          fail(new MooyahoError(String(frame['code']), String(frame['message'])));
          return;
        }
        if (frame.type !== 'connected' || settled) return;
        settled = true;
        clearTimeout(timer);
        this.handlers.onIceServers(iceServersOf(frame));
        this.#attach(ws);
        resolve({ id: String(frame['id']), token: String(frame['token']) });
      };
    });
  }

  #attach(ws: WebSocket): void {
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
      // A pong that does not come back within one interval means the socket is dead even if
      // TCP has not noticed; treat it exactly like a close.
      this.request({ type: 'ping' }, this.options.heartbeatMs).catch(() => {
        if (this.ws === ws) {
          this.#lost();
          ws.close();
        }
      });
    }, this.options.heartbeatMs);
  }

  #dispatch(frame: ServerFrame): void {
    const id = frame.requestId;
    const pending = typeof id === 'number' ? this.#pending.get(id) : undefined;
    // A reply whose request already failed (timed out, or its socket dropped): the caller may
    // have sent the request again, and this late answer belongs to none of its retries.
    if (typeof id === 'number' && !pending) return;
    if (pending && typeof id === 'number') {
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      if (frame.type === 'error') {
        pending.reject(new MooyahoError(String(frame['code']), String(frame['message']), pending.type));
      } else {
        pending.resolve(frame);
      }
      return;
    }
    if (frame.type === 'error') {
      this.handlers.onError(new MooyahoError(String(frame['code']), String(frame['message'])));
      return;
    }
    if (frame.type === 'resumeToken') {
      // The server rotates a connected session's token; the next resume needs the newest one.
      this.#token = String(frame['token']);
      return;
    }
    this.handlers.onEvent(frame);
  }

  /** Forgets the current socket: pending requests fail now rather than at their timeouts. */
  #detach(error: MooyahoError): void {
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

  #lost(): void {
    this.#detach(new MooyahoError('disconnected', 'the signaling socket closed'));
    if (!this.#disposed && !this.#reconnecting && this.sessionId !== null) void this.#reconnect();
  }

  async #reconnect(): Promise<void> {
    this.#reconnecting = true;
    try {
      for (let attempt = 0; !this.#disposed; attempt++) {
        // Exponential backoff with jitter so a restarted server is not hit by every client at once.
        const base = Math.min(MAX_BACKOFF_MS, 250 * 2 ** attempt);
        await sleep(base / 2 + Math.random() * (base / 2));
        if (this.#disposed) return;
        let fresh: { id: string; token: string };
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
          const reply = await this.request({ type: 'reuseId', id: previous, token: this.#token });
          // Tokens are single-use: keep the fresh one for the next drop.
          this.#token = String(reply['token']);
          this.handlers.onIceServers(iceServersOf(reply));
          this.handlers.onResumed(String(reply['id']), reply);
          return;
        } catch (e) {
          const error = e as MooyahoError;
          if (RETRYABLE.has(error.code)) {
            // Transient (socket died, no reply, store briefly down): the token is still
            // unused, so drop this socket and try again after the next backoff step.
            const ws = this.ws;
            this.#detach(error);
            ws?.close();
            continue;
          }
          // The server refused the resume (grace window over, token used): the fresh session
          // this socket opened with is the one we hold now.
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
}

function parse(data: unknown): ServerFrame | null {
  if (typeof data !== 'string') return null;
  try {
    const frame: unknown = JSON.parse(data);
    if (frame && typeof frame === 'object' && typeof (frame as ServerFrame).type === 'string') {
      return frame as ServerFrame;
    }
  } catch {
    // Not JSON: the server never sends that; ignore rather than crash the client.
  }
  return null;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
