/// <reference types="node" />
// Node server SDK: the REST calls a service server makes (same operations as the Rust server
// SDK). Each instance carries its own base URL and key; the original shared one global axios
// instance, so a second instance silently overwrote the first.

import { createHmac, timingSafeEqual } from 'node:crypto';

/** What a join token lets its holder do (see `createJoinToken`). */
export interface JoinTokenGrant {
  /** The user's id (the token's `sub`). */
  userId: string;
  /** The user's display name. */
  name?: string;
  /** The one channel the session may enter. */
  channel: string;
  /** May publish media in SFU channels (default true). */
  publish?: boolean;
  /** May receive media in SFU channels (default true). */
  subscribe?: boolean;
  /** Lifetime in seconds (default 3600). */
  ttlSeconds?: number;
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

/**
 * Signs a join token offline: an HS256 JWT with the server's `--token-secret` (by default its API
 * key). The browser connects with it (`new Mooyaho({ url, token })`) and starts integrated as
 * `userId`, limited to `channel`. Keep the secret on the server.
 */
export function createJoinToken(secret: string, grant: JoinTokenGrant): string {
  if (!secret || !grant.userId || !grant.channel) {
    throw new TypeError('secret, userId and channel must be non-empty');
  }
  const ttl = grant.ttlSeconds ?? 3600;
  if (!Number.isInteger(ttl) || ttl < 1) throw new TypeError(`ttlSeconds must be a positive integer: ${ttl}`);
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    sub: grant.userId,
    channel: grant.channel,
    publish: grant.publish ?? true,
    subscribe: grant.subscribe ?? true,
    iat: now,
    exp: now + ttl,
  };
  if (grant.name !== undefined) claims['name'] = grant.name;
  const signed = `${base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${base64url(JSON.stringify(claims))}`;
  const signature = createHmac('sha256', secret).update(signed).digest();
  return `${signed}.${base64url(signature)}`;
}

/** A webhook the server POSTs to each `--webhook-url` (see `verifyWebhook`). */
export interface WebhookEvent {
  /** Unique per event; a retried delivery repeats it (deduplicate on it). */
  id: string;
  /** 1, 2, 3, … per signaling instance in emission order (a retry repeats it): a number never received was dropped or given up. */
  seq?: number;
  event:
    | 'channel.created'
    | 'channel.deleted'
    | 'participant.joined'
    | 'participant.left'
    | 'track.published'
    | 'track.unpublished'
    | 'sfu.up'
    | 'sfu.down';
  /** When it happened, milliseconds since the Unix epoch. */
  createdAt: number;
  channel?: string;
  session?: string;
  /** The session's user, when known. */
  user?: unknown;
  /** `id` is the publisher's `MediaStreamTrack.id` (or the mid when its offer named none). */
  track?: { id: string; mid: string; kind: 'audio' | 'video' };
  /** The SFU node's id (as in `/sfu-servers`). */
  sfuServer?: number;
}

/** The shortest webhook secret `verifyWebhook` accepts (the server refuses shorter ones too). */
const MIN_WEBHOOK_SECRET_BYTES = 16;
/** The longest `Mooyaho-Signature` header read (a string's length; bytes for ASCII). */
const MAX_SIGNATURE_HEADER_BYTES = 1024;
/** The most `v1` entries read from one header. */
const MAX_SIGNATURES = 8;

/** Why `verifyWebhook` refused a delivery. */
export class WebhookVerificationError extends Error {
  readonly code: 'malformed_header' | 'expired' | 'bad_signature' | 'invalid_body' | 'invalid_argument';
  constructor(code: WebhookVerificationError['code'], message: string) {
    super(message);
    this.name = 'WebhookVerificationError';
    this.code = code;
  }
}

/**
 * Verifies a webhook and returns its event. `body` is the raw request body exactly as received
 * (a string or bytes, before any JSON parsing), `signatureHeader` the `Mooyaho-Signature` header
 * (`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`), `secret` the server's
 * `--webhook-secret` (by default hex HMAC-SHA256(API key, "mooyaho-webhook-v1"), see docs/webhooks.md). A timestamp more than `toleranceSeconds` from now
 * is refused (`expired`), so a captured delivery cannot be replayed later. Throws
 * `WebhookVerificationError`; `invalid_argument` for a secret shorter than 16 bytes or a
 * tolerance that is not a finite number ≥ 0. The header is read only up to 1 KiB and 8 `v1`
 * entries (`malformed_header` beyond).
 */
export function verifyWebhook(
  body: string | Uint8Array,
  signatureHeader: string | null | undefined,
  secret: string,
  toleranceSeconds = 300,
  nowSeconds = Math.floor(Date.now() / 1000),
): WebhookEvent {
  if (Buffer.byteLength(secret ?? '', 'utf8') < MIN_WEBHOOK_SECRET_BYTES) {
    throw new WebhookVerificationError('invalid_argument', `webhook secret must be at least ${MIN_WEBHOOK_SECRET_BYTES} bytes`);
  }
  if (typeof toleranceSeconds !== 'number' || !Number.isFinite(toleranceSeconds) || toleranceSeconds < 0) {
    throw new WebhookVerificationError('invalid_argument', `toleranceSeconds must be a finite number >= 0, not ${String(toleranceSeconds)}`);
  }
  const malformed = () => new WebhookVerificationError('malformed_header', 'malformed Mooyaho-Signature header');
  const header = signatureHeader ?? '';
  if (header.length > MAX_SIGNATURE_HEADER_BYTES) throw malformed();
  let timestamp: number | undefined;
  const signatures: Buffer[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) throw malformed();
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't') {
      if (!/^[0-9]{1,15}$/.test(value)) throw malformed();
      timestamp = Number(value);
    } else if (key === 'v1') {
      if (signatures.length === MAX_SIGNATURES || !/^[0-9a-fA-F]{64}$/.test(value)) throw malformed();
      signatures.push(Buffer.from(value, 'hex'));
    }
  }
  if (timestamp === undefined || signatures.length === 0) throw malformed();
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) {
    throw new WebhookVerificationError('expired', `webhook timestamp ${timestamp} is more than ${toleranceSeconds} s from now`);
  }
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body);
  const expected = createHmac('sha256', secret).update(`${timestamp}.`).update(bytes).digest();
  if (!signatures.some((signature) => timingSafeEqual(signature, expected))) {
    throw new WebhookVerificationError('bad_signature', 'webhook signature does not match');
  }
  let event: unknown;
  try {
    event = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new WebhookVerificationError('invalid_body', `webhook body is not JSON: ${(e as Error).message}`);
  }
  if (typeof event !== 'object' || event === null || typeof (event as WebhookEvent).event !== 'string') {
    throw new WebhookVerificationError('invalid_body', 'webhook body is not an event');
  }
  return event as WebhookEvent;
}

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
  /** Every SFU node serving the channel (a room larger than a node spans several), first node first. */
  sfuServerIds: number[];
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
  /** Draining and hosting no channel any more: `deleteSfuServer` needs no `force`. */
  drained: boolean;
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
  /** Has the server sign a join token (`POST /tokens`); `createJoinToken` does it offline. */
  createToken(grant: JoinTokenGrant): Promise<{ token: string; expiresAt: number }> {
    return this.#call('POST', '/tokens', grant);
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
