// Shapes shared by the SDK modules: configuration, wire messages, errors.

export type MediaKey = 'muted' | 'videoOff';

export type ChatMessage = { type: 'text'; text: string } | { type: 'custom'; data: unknown };

export interface MediaState {
  muted: boolean;
  videoOff: boolean;
}

export interface SessionInfo {
  id: string;
  user: unknown;
  state: MediaState;
}

export interface MooyahoConfig {
  /** Base URL of the signaling server: http(s)://host:port or ws(s)://host:port. */
  url: string;
  /** Accept direct calls from sessions outside this client's channel (default false). */
  allowDirectCall?: boolean;
  /**
   * A join token from the service server (`createJoinToken` or `POST /tokens`): the session
   * starts integrated as the token's user, limited to its channel and grants, with no
   * `integrateUser` step. An invalid or expired token makes `connect()` reject.
   */
  token?: string;
  /**
   * STUN/TURN servers for every PeerConnection (the original hard-coded none). A server run
   * with `--turn-url` adds its TURN servers, with short-lived credentials, after these.
   */
  iceServers?: RTCIceServer[];
  /** `'relay'` sends media only through TURN (default `'all'`). */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** How long `connect()` and each request wait for the server (ms, default 10000). */
  requestTimeoutMs?: number;
  /** Interval of the app-level ping that detects dead sockets (ms, default 5000). */
  heartbeatMs?: number;
  /**
   * In SFU channels, publish camera video as simulcast layers (`q`, `h`, `f` at 1/4, 1/2 and full
   * resolution from 960×540; `h` and `f` from 480×270; one encoding below, as Chromium sends no
   * more at those sizes) so each viewer can get the one it asks for with `setSubscription`
   * (default true). Mesh and direct calls always send one encoding.
   */
  simulcast?: boolean;
}

/** How much of a publisher's video a viewer wants (`setSubscription`). */
export type VideoQuality = 'high' | 'medium' | 'low' | 'off';

/** A viewer's wish about one publisher's media in an SFU channel. */
export interface SubscriptionWish {
  /** The most video wanted: `high` (default), `medium`, `low` or `off` (no video packets). */
  video: VideoQuality;
  /** Whether its audio is wanted; omitted leaves it as it was (wanted by default). */
  audio?: boolean;
}

/** A server frame: `type` plus whatever fields that type carries. */
export interface ServerFrame {
  type: string;
  requestId?: string | number;
  [field: string]: unknown;
}

/**
 * Every failure the SDK reports: server `error` replies keep the server's `code`
 * (`forbidden`, `channel_not_found`, `sfu_unavailable`, ...); SDK-side failures use
 * `timeout`, `disconnected`, `rejected`, `invalid_state`, `webrtc`, `media_connection_failed`
 * (an SFU PeerConnection failed; the SDK reconnects it), `insecure_context` (no camera API on a
 * plain-http page).
 */
export class MooyahoError extends Error {
  readonly code: string;
  /** The request type that failed, when there was one. */
  readonly request: string | undefined;
  constructor(code: string, message: string, request?: string) {
    super(message);
    this.name = 'MooyahoError';
    this.code = code;
    this.request = request;
  }
}
