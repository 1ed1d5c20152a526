// Types for @wsgate/client/react (src/react.js).

import type { ConnectOptions, Connection, ConnectionEvents, State, StateEvent } from './index.js';

/** One received message: what the client's `message` event carried. */
export interface WsgateMessage {
  /** The payload as a non-durable route delivers it (text, or bytes). */
  data: string | ArrayBuffer | Blob | Uint8Array;
  /** The payload parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
  /** The resume position, on a durable route with resume: true. */
  position?: string;
}

type Listener = (...args: any[]) => void;

/** connect()'s options (without url), passed through unchanged, plus the hook's own. */
export type UseWsgateOptions = Omit<ConnectOptions, 'url'> & {
  /** false keeps no connection (e.g. until a session id is known). Defaults to true. */
  enabled?: boolean;
  /** How many of the last messages `messages` holds. Defaults to 100; 0 keeps none (use `on`). */
  keep?: number;
  /** Listeners by event name ('state', 'refetch', 'type:token', ...), called in their latest version. */
  on?: { [K in keyof ConnectionEvents]?: ConnectionEvents[K] } & { [event: `type:${string}`]: Listener };
};

export interface UseWsgateResult {
  /** 'idle' until the first attempt (and while disabled), then the client's state. */
  state: State;
  /** The last `keep` messages, oldest first. */
  messages: WsgateMessage[];
  lastMessage: WsgateMessage | undefined;
  /** The last resume position (resume: true). */
  position: string | undefined;
  /** The last reconnecting/closed event: code, reason, delay, attempt. */
  closeEvent: StateEvent | undefined;
  /** The last `error` event (a failed socket or token provider); the client recovers by itself. */
  error: unknown;
  /** The live connection, for anything the hook does not wrap. */
  connection: Connection | null;
  /** Sends now when open, else queues; false when refused (no connection, queue full, closed). */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): boolean;
  /** Sends {"type": type, "data": data}. */
  sendJSON(type: string, data?: unknown): boolean;
  /** Empties `messages` and `lastMessage`. */
  clearMessages(): void;
}

/**
 * Keeps a connection to url open while mounted; a new url (or enabled)
 * replaces it, with an empty message list. Reconnect, token refresh on 4001
 * and resume are the client's.
 */
export declare function useWsgate(url: string | URL | null | undefined, options?: UseWsgateOptions): UseWsgateResult;
