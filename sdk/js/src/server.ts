// Node server SDK: the REST calls a service server makes (same operations as the Rust server
// SDK). Each instance carries its own base URL and key; the original shared one global axios
// instance, so a second instance silently overwrote the first.

export interface MooyahoServerConfig {
  /** e.g. `http://127.0.0.1:8080` */
  baseUrl: string;
  /** The REST API key (`Authorization: Bearer`). Keep it on the server; never ship it to a browser. */
  apiKey: string;
  /** Per-request timeout in ms (default 10000). */
  timeoutMs?: number;
}

export interface Channel {
  id: string;
  sfuServerId: number | null;
  sfuEnabled: boolean;
  /** Member count (listings only). */
  sessionCount?: number;
}

export interface ChannelSession {
  sessionId: string;
  user: unknown;
}

export interface ChannelWithSessions {
  id: string;
  sfuServerId: number | null;
  sfuEnabled: boolean;
  channelSessions: ChannelSession[];
}

export interface BulkDeleteResult {
  deleted: string[];
  notFound: string[];
}

export interface IntegratedSession {
  sessionId: string;
  user: unknown;
}

export interface SfuServer {
  id: number;
  address: string;
  fingerprint: string | null;
  disabled: boolean;
  draining: boolean;
  health: string;
  rooms: number;
  sessions: number;
}

export interface SfuServerPatch {
  address?: string;
  fingerprint?: string;
  disabled?: boolean;
  draining?: boolean;
}

/** The server answered with an error status (its JSON body's `message`), or could not be reached (`status` 0). */
export class MooyahoApiError extends Error {
  readonly status: number;
  /** The server's short error name (`Not Found`, ...), when it sent one. */
  readonly error: string | undefined;
  constructor(status: number, message: string, error?: string) {
    super(message);
    this.name = 'MooyahoApiError';
    this.status = status;
    this.error = error;
  }
}

export class MooyahoServer {
  readonly baseUrl: string;
  readonly #apiKey: string;
  readonly #timeoutMs: number;

  constructor(config: MooyahoServerConfig) {
    const baseUrl = config.baseUrl.replace(/\/+$/, '');
    if (!/^https?:\/\//.test(baseUrl)) throw new TypeError(`baseUrl must be http(s): ${config.baseUrl}`);
    this.baseUrl = baseUrl;
    this.#apiKey = config.apiKey;
    this.#timeoutMs = config.timeoutMs ?? 10_000;
  }

  createChannel(sfuEnabled = false): Promise<Channel> {
    return this.#call('POST', '/channels', { sfuEnabled });
  }
  getChannel(id: string): Promise<ChannelWithSessions> {
    return this.#call('GET', `/channels/${encodeURIComponent(id)}`);
  }
  listChannels(): Promise<Channel[]> {
    return this.#call('GET', '/channels');
  }
  async deleteChannel(id: string): Promise<void> {
    await this.#call('DELETE', `/channels/${encodeURIComponent(id)}`);
  }
  bulkDeleteChannels(ids: string[]): Promise<BulkDeleteResult> {
    return this.#call('POST', '/channels/bulk-delete', { ids });
  }
  /** Binds a user (an object with a non-empty string `id`) to a browser's session. */
  integrateUser(sessionId: string, user: { id: string; [field: string]: unknown }): Promise<IntegratedSession> {
    return this.#call('POST', `/sessions/${encodeURIComponent(sessionId)}`, user);
  }
  createSfuServer(address: string, fingerprint?: string): Promise<SfuServer> {
    return this.#call('POST', '/sfu-servers', fingerprint === undefined ? { address } : { address, fingerprint });
  }
  listSfuServers(): Promise<SfuServer[]> {
    return this.#call('GET', '/sfu-servers');
  }
  getSfuServer(id: number): Promise<SfuServer> {
    return this.#call('GET', `/sfu-servers/${id}`);
  }
  updateSfuServer(id: number, patch: SfuServerPatch): Promise<SfuServer> {
    return this.#call('PATCH', `/sfu-servers/${id}`, patch);
  }
  drainSfuServer(id: number): Promise<SfuServer> {
    return this.#call('POST', `/sfu-servers/${id}/drain`);
  }
  /** `force` deletes even while channels are placed on the node (otherwise 409). */
  async deleteSfuServer(id: number, force = false): Promise<void> {
    await this.#call('DELETE', `/sfu-servers/${id}?force=${force}`);
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let response: Response;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers: {
          authorization: `Bearer ${this.#apiKey}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (e) {
      throw new MooyahoApiError(0, `${method} ${path}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const text = await response.text();
    if (!response.ok) {
      let message = text || response.statusText;
      let error: string | undefined;
      try {
        const parsed = JSON.parse(text) as { message?: unknown; error?: unknown };
        if (typeof parsed.message === 'string') message = parsed.message;
        if (typeof parsed.error === 'string') error = parsed.error;
      } catch {
        // Not JSON (a proxy's error page): keep the raw text.
      }
      throw new MooyahoApiError(response.status, message, error);
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }
}
