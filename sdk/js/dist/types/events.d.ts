import type { ChatMessage, MediaKey, MooyahoError } from './types.js';
/** What one side of an incoming direct call can do with it. Nothing is auto-answered. */
export interface IncomingCall {
    /** The caller's session id. */
    sessionId: string;
    /** Answers with the local stream (if any) and connects. */
    accept(): Promise<void>;
    /** Declines; the caller's `directCall` promise rejects with `reason`. */
    reject(reason?: string): void;
}
/** One entry of `activeSpeakersChanged`. */
export interface ActiveSpeaker {
    sessionId: string;
    /** Smoothed loudness, 0..1 (linear, of full scale). */
    level: number;
    isSelf: boolean;
}
export interface EventMap {
    connected: {
        sessionId: string;
    };
    enterSuccess: {
        channel: string;
        sfuEnabled: boolean;
    };
    entered: {
        sessionId: string;
        user: unknown;
        isSelf: boolean;
    };
    left: {
        sessionId: string;
    };
    remoteStreamChanged: {
        sessionId: string;
    };
    /** A peer-to-peer PeerConnection (mesh or direct call) or the SFU subscribe PC (sessionId null) connected. */
    peerConnected: {
        sessionId: string | null;
        peer: RTCPeerConnection;
    };
    /** The SFU publish PeerConnection connected. */
    sfuPeerConnected: {
        peer: RTCPeerConnection;
    };
    /**
     * The channel's SFU media moved to another room (its node failed or restarted): the SDK drops
     * its SFU PeerConnections and publishes and subscribes again by itself (`reconnecting`, then
     * `reconnected` with `what: 'sfu'`).
     */
    sfuRestart: {
        channel: string;
    };
    /**
     * The SDK is rebuilding its SFU PeerConnections: after `sfuRestart`, or because one of them
     * went `failed` (then it leaves and re-enters the channel). `attempt` counts from 1; failed
     * attempts are retried with backoff (1 s doubling to 15 s, jittered) until one succeeds or the
     * channel is left.
     */
    reconnecting: {
        what: 'sfu';
        reason: 'sfuRestart' | 'failed';
        attempt: number;
    };
    /**
     * Connectivity is back: `what: 'socket'` — the socket dropped and the same session was
     * resumed; `what: 'sfu'` — after `reconnecting`, the new SFU PeerConnection connected (the
     * publish one, or the subscribe one for a member that does not publish).
     */
    reconnected: {
        sessionId: string;
        what: 'socket' | 'sfu';
    };
    updatedMediaState: {
        sessionId: string;
        key: MediaKey;
        value: boolean;
        isSelf: boolean;
    };
    /**
     * SFU channels: who speaks now, loudest first (`level` 0..1, smoothed), at most every 200 ms
     * and only when the ranking changed; an empty list when nobody speaks.
     */
    activeSpeakersChanged: {
        speakers: ActiveSpeaker[];
    };
    /**
     * SFU channels, publishers: which simulcast layers of our video (m-line `mid`) anyone
     * consumes (`qualities`: rids such as `q`/`h`/`f`; `layers`: 0 = lowest). The SDK has already
     * set the other encodings `active: false` (dynacast); this is for display and logging.
     */
    subscribedQualities: {
        mid: string;
        qualities: string[];
        layers: number[];
    };
    messaged: {
        sessionId: string;
        message: ChatMessage;
        isSelf: boolean;
    };
    channelClosed: {
        channel: string;
    };
    integrated: {
        user: unknown;
    };
    incomingCall: IncomingCall;
    callRejected: {
        sessionId: string;
        reason: string | null;
    };
    /** A peer-to-peer connection ended (hang-up, failure, or the peer left). */
    peerDisconnected: {
        sessionId: string;
    };
    /** Anything that went wrong outside a promise the application is awaiting. */
    error: MooyahoError;
}
export type EventType = keyof EventMap;
export type Listener<K extends EventType> = (payload: EventMap[K]) => void;
export declare class Emitter {
    #private;
    addEventListener<K extends EventType>(type: K, listener: Listener<K>): void;
    removeEventListener<K extends EventType>(type: K, listener: Listener<K>): void;
    protected emit<K extends EventType>(type: K, payload: EventMap[K]): void;
    protected removeAllListeners(): void;
}
