// Browser entry point: `import { Mooyaho } from '/sdk/mooyaho.js'`.
export { Mooyaho, qualityForSize } from './Mooyaho.js';
export { MooyahoError } from './types.js';
export type { ChatMessage, MediaKey, MediaState, MooyahoConfig, SessionInfo, SubscriptionWish, VideoQuality } from './types.js';
export type { ActiveSpeaker, EventMap, EventType, IncomingCall, Listener } from './events.js';
