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
export declare function iceServersOf(frame: ServerFrame): RTCIceServer[];
export interface SocketOptions {
    requestTimeoutMs: number;
    heartbeatMs: number;
}
export declare class SignalingSocket {
    #private;
    private readonly url;
    private readonly handlers;
    private readonly options;
    /** A join token for the first connection only: reconnects resume with `reuseId`, whose
     * resume token is the proof (the join token may have expired by then). Kept out of error
     * messages. */
    private readonly joinToken?;
    /** The live WebSocket (null while disconnected). Public so tests can drop it. */
    ws: WebSocket | null;
    /** The session this client holds; unchanged across successful resumes. */
    sessionId: string | null;
    constructor(url: string, handlers: SocketHandlers, options: SocketOptions, 
    /** A join token for the first connection only: reconnects resume with `reuseId`, whose
     * resume token is the proof (the join token may have expired by then). Kept out of error
     * messages. */
    joinToken?: string | undefined);
    get connected(): boolean;
    /** Opens the first connection; resolves the new session id, rejects on failure or timeout. */
    connect(): Promise<string>;
    /** Sends a request and resolves its reply (`ack` for requests with no natural reply). */
    request(message: Record<string, unknown>, timeoutMs?: number): Promise<ServerFrame>;
    /** Fire-and-forget: a refusal is still reported, through `onError`. */
    send(message: Record<string, unknown>): void;
    /** Closes the socket as if the network dropped it; the client reconnects and resumes. */
    drop(): void;
    /** Closes for good: no reconnect. */
    dispose(): void;
}
