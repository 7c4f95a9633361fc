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
/**
 * Signs a join token offline: an HS256 JWT with the server's `--token-secret` (by default its API
 * key). The browser connects with it (`new Mooyaho({ url, token })`) and starts integrated as
 * `userId`, limited to `channel`. Keep the secret on the server.
 */
export declare function createJoinToken(secret: string, grant: JoinTokenGrant): string;
/** A webhook the server POSTs to each `--webhook-url` (see `verifyWebhook`). */
export interface WebhookEvent {
    /** Unique per event; a retried delivery repeats it (deduplicate on it). */
    id: string;
    /** 1, 2, 3, … per signaling instance in emission order (a retry repeats it): a number never received was dropped or given up. */
    seq?: number;
    event: 'channel.created' | 'channel.deleted' | 'participant.joined' | 'participant.left' | 'track.published' | 'track.unpublished' | 'sfu.up' | 'sfu.down';
    /** When it happened, milliseconds since the Unix epoch. */
    createdAt: number;
    channel?: string;
    session?: string;
    /** The session's user, when known. */
    user?: unknown;
    /** `id` is the publisher's `MediaStreamTrack.id` (or the mid when its offer named none). */
    track?: {
        id: string;
        mid: string;
        kind: 'audio' | 'video';
    };
    /** The SFU node's id (as in `/sfu-servers`). */
    sfuServer?: number;
}
/** Why `verifyWebhook` refused a delivery. */
export declare class WebhookVerificationError extends Error {
    readonly code: 'malformed_header' | 'expired' | 'bad_signature' | 'invalid_body' | 'invalid_argument';
    constructor(code: WebhookVerificationError['code'], message: string);
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
export declare function verifyWebhook(body: string | Uint8Array, signatureHeader: string | null | undefined, secret: string, toleranceSeconds?: number, nowSeconds?: number): WebhookEvent;
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
export declare class MooyahoApiError extends Error {
    readonly status: number;
    /** The server's short error name (`Not Found`, ...), when it sent one. */
    readonly error: string | undefined;
    constructor(status: number, message: string, error?: string);
}
export declare class MooyahoServer {
    #private;
    readonly baseUrl: string;
    constructor(config: MooyahoServerConfig);
    createChannel(sfuEnabled?: boolean): Promise<Channel>;
    getChannel(id: string): Promise<ChannelWithSessions>;
    listChannels(): Promise<Channel[]>;
    deleteChannel(id: string): Promise<void>;
    bulkDeleteChannels(ids: string[]): Promise<BulkDeleteResult>;
    /** Has the server sign a join token (`POST /tokens`); `createJoinToken` does it offline. */
    createToken(grant: JoinTokenGrant): Promise<{
        token: string;
        expiresAt: number;
    }>;
    /** Binds a user (an object with a non-empty string `id`) to a browser's session. */
    integrateUser(sessionId: string, user: {
        id: string;
        [field: string]: unknown;
    }): Promise<IntegratedSession>;
    createSfuServer(address: string, fingerprint?: string): Promise<SfuServer>;
    listSfuServers(): Promise<SfuServer[]>;
    getSfuServer(id: number): Promise<SfuServer>;
    updateSfuServer(id: number, patch: SfuServerPatch): Promise<SfuServer>;
    drainSfuServer(id: number): Promise<SfuServer>;
    /** `force` deletes even while channels are placed on the node (otherwise 409). */
    deleteSfuServer(id: number, force?: boolean): Promise<void>;
}
