import type { MooyahoError, ServerFrame } from './types.js';
export interface MeshIo {
    request(message: Record<string, unknown>): Promise<ServerFrame>;
    /**
     * A refusal of a message to `sessionId`'s peer; the app hears of it (the SDK's `error`
     * event) unless the SDK knows it is expected.
     */
    onError(error: MooyahoError, sessionId: string): void;
    onTrack(sessionId: string, track: MediaStreamTrack): void;
    onConnected(sessionId: string, pc: RTCPeerConnection): void;
    /** The connection failed, or the other side closed it (hung up). */
    onFailed(sessionId: string): void;
}
type Candidate = RTCIceCandidateInit | null;
export declare class PeerLink {
    #private;
    readonly sessionId: string;
    readonly pc: RTCPeerConnection;
    constructor(sessionId: string, config: RTCConfiguration, io: MeshIo);
    /** Offerer side: one transceiver per kind, sending what we have and receiving either way. */
    createOffer(local: MediaStream | null): Promise<string>;
    /** Answerer side: attaches local tracks to the offered transceivers. */
    answerOffer(sdp: string, local: MediaStream | null): Promise<string>;
    acceptAnswer(sdp: string): Promise<void>;
    addCandidate(candidate: Candidate): Promise<void>;
    close(): void;
}
/** All peer-to-peer links of this client. */
export declare class Mesh {
    #private;
    private readonly config;
    private readonly io;
    readonly peers: Map<string, PeerLink>;
    constructor(config: RTCConfiguration, io: MeshIo);
    /** Offers to `to` (mesh: to a newcomer; direct call: the callee). Rejects if the server refuses. */
    offer(to: string, local: MediaStream | null): Promise<void>;
    /** Answers an offer from `from` (mesh member, or an accepted direct call). */
    answer(from: string, sdp: string, local: MediaStream | null): Promise<void>;
    answered(from: string, sdp: string): Promise<void>;
    candidate(from: string, candidate: Candidate): Promise<void>;
    /** Closes the link with `sessionId`; true if there was one. */
    close(sessionId: string, options?: {
        keepEarly?: boolean;
    }): boolean;
    closeAll(): void;
}
export {};
