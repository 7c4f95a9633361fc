import type { ServerFrame } from './types.js';
export interface SfuIo {
    request(message: Record<string, unknown>): Promise<ServerFrame>;
    send(message: Record<string, unknown>): void;
    onTrack(sessionId: string, track: MediaStreamTrack): void;
    onTrackEnded(sessionId: string, track: MediaStreamTrack): void;
    onPublishConnected(pc: RTCPeerConnection): void;
    onSubscribeConnected(pc: RTCPeerConnection): void;
    /**
     * One of the SFU PeerConnections went `failed` (the SDK recovers; see `Mooyaho`): `ice` when
     * no path to the node worked, `dtls` when ICE did but the secure handshake or its consent
     * failed.
     */
    onFailed(side: 'publish' | 'subscribe', layer: 'ice' | 'dtls'): void;
}
type Candidate = RTCIceCandidateInit | null;
/**
 * The simulcast encodings for a camera track, lowest first (the SFU orders `q` < `h` < `f`):
 * three layers from 960×540 up, two (`h`, `f`) from 480×270, none (one plain encoding) below.
 * These are the layer counts Chromium sends at those sizes: asked for more, it silently sends
 * only the lowest ones. The bitrate caps keep all three under the node's REMB.
 */
export declare function simulcastEncodings(width: number, height: number): RTCRtpEncodingParameters[];
export declare class Sfu {
    #private;
    private readonly config;
    private readonly io;
    /** Publish camera video as simulcast layers. */
    private readonly simulcast;
    publisher: RTCPeerConnection | null;
    subscriber: RTCPeerConnection | null;
    constructor(config: RTCConfiguration, io: SfuIo, 
    /** Publish camera video as simulcast layers. */
    simulcast?: boolean);
    /** Publishes the local tracks. Rejects with the server's error (e.g. `sfu_unavailable`). */
    publish(local: MediaStream): Promise<void>;
    answered(sdp: string): Promise<void>;
    /** A (re-)offer of the subscribe PeerConnection. */
    offered(sdp: string): Promise<void>;
    /**
     * Dynacast: the node says which layers of our video on m-line `mid` anyone consumes (by rid,
     * or by index for encodings without one); the others are set `active: false`, so nobody's
     * unwatched 720p is encoded, and set active again when needed. Applied one at a time (a
     * sender takes one `setParameters` at once), each against the sender's current parameters.
     */
    subscribedQualities(mid: string, qualities: string[], layers: number[]): Promise<void>;
    /** SFU candidates carry no session; route them by ICE username fragment. */
    candidate(candidate: Candidate): Promise<void>;
    /** The PeerConnections are closed: nothing more will happen on them. */
    get closed(): boolean;
    close(): void;
}
export {};
