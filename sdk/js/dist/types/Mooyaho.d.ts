import { Emitter } from './events.js';
import { SignalingSocket } from './socket.js';
import { type MediaKey, type MooyahoConfig, type SessionInfo, type SubscriptionWish, type VideoQuality } from './types.js';
export declare class Mooyaho extends Emitter {
    #private;
    readonly config: Readonly<MooyahoConfig>;
    /** The current channel id, or '' outside a channel (the original's convention). */
    channelId: string;
    sfuEnabled: boolean;
    /** Members of the current channel, this client included. */
    readonly sessions: Map<string, SessionInfo>;
    /** One stream per remote session, owned by the SDK (tracks are added and removed in place). */
    readonly remoteStreams: Map<string, MediaStream>;
    constructor(config: MooyahoConfig);
    /** The signaling socket (tests use `socket.drop()` to simulate a network drop). */
    get socket(): SignalingSocket;
    get sessionId(): string | null;
    /** Peer-to-peer PeerConnections by remote session id. */
    get peers(): Map<string, RTCPeerConnection>;
    /** The SFU PeerConnections, when in an SFU channel. */
    get sfuPeers(): {
        publisher: RTCPeerConnection | null;
        subscriber: RTCPeerConnection | null;
    };
    get sessionsArray(): SessionInfo[];
    /** Opens the socket; resolves the session id. Rejects on failure or timeout. */
    connect(): Promise<string>;
    /** Camera/microphone, cached. Call before `enter`/`directCall`: mesh tracks go into PCs created later. */
    createUserMedia(constraints?: MediaStreamConstraints): Promise<MediaStream>;
    getMyStream(): MediaStream | null;
    getRemoteStreamById(sessionId: string): MediaStream | null;
    /** Binds a user to this session (only when the server runs with anonymous mode on). */
    integrateUser(user: Record<string, unknown>): Promise<unknown>;
    /** Enters a channel. Resolves once entered and the member list is loaded; rejects with the server's error. */
    enter(channelId: string): Promise<void>;
    /** Leaves the channel and releases everything tied to it. */
    leave(): Promise<void>;
    /** Calls a session outside any shared channel. Resolves when it accepts, rejects when it declines. */
    directCall(sessionId: string): Promise<void>;
    /** Ends a peer-to-peer connection (a direct call, typically) and drops that session's stream. */
    hangUp(sessionId: string): void;
    /** Announces a mute/camera change and applies it to the local tracks. */
    updateMediaState(key: MediaKey, value: boolean): Promise<void>;
    /**
     * In an SFU channel, what this client wants of `sessionId`'s media: `video` is the most it
     * wants (`high`, `medium`, `low` simulcast layer, or `off` for no video packets), `audio`
     * whether it wants the audio (omitted: unchanged). Resolves once the server acknowledged it;
     * rejects with the server's error (`invalid_message`, `session_not_found`, `sfu_unavailable`
     * while nobody publishes yet). The SDK tells the wish again after an SFU recovery.
     */
    setSubscription(sessionId: string, wish: SubscriptionWish): Promise<void>;
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
    observeVideo(sessionId: string, element: Element): () => void;
    /** Chat to the channel: a string is sent as text, anything else as custom data. */
    sendMessage(message: string | unknown): Promise<void>;
    /** The channel's members, fresh from the server. */
    getSessions(): Promise<SessionInfo[]>;
    /** Simulates a network drop (the original's name): the client reconnects and resumes. */
    manuallyDisconnect(): void;
    /** Closes everything; the instance cannot be used again. */
    dispose(): void;
}
/**
 * The video wish for an element rendered `width` × `height` device pixels (adaptive stream):
 * the smallest of the SDK's layers (¼, ½, full of a 720p camera) that is at least as large as
 * the element's longer side (never upscaled): no area → `off`; ≤ 320 → `low`; ≤ 640 →
 * `medium`; else `high`.
 */
export declare function qualityForSize(width: number, height: number): VideoQuality;
