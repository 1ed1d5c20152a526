// Types for @wsgate/client (src/index.js).

/** What the client does after a close code; see closeActions. */
export type CloseAction = 'normal' | 'stop' | 'backoff' | 'refresh' | 'refetch';

/** The close-code table the client follows. Codes not listed reconnect with backoff. */
export declare const closeActions: Readonly<Record<number, CloseAction>>;

/** What the client does after a close with code. */
export declare function closeAction(code: number): CloseAction;

/** 'base64url.bearer.authorization.k8s.io.': the subprotocol token-carrier prefix. */
export declare const SUBPROTOCOL_PREFIX: string;

/** The subset of the WHATWG WebSocket the client uses (browsers, Node 22+, the ws package). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  send(data: any): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface BackoffOptions {
  /** Cap of the first retry's delay, in ms. Defaults to 500. */
  initial?: number;
  /** Largest cap, in ms. Defaults to 30000. */
  max?: number;
  /** Growth of the cap per consecutive retry. Defaults to 2. The delay is uniform in [0, cap) (full jitter). */
  factor?: number;
}

export interface ConnectOptions {
  /** ws:, wss:, http:, https: or a path relative to the page (http maps to ws). */
  url: string | URL;
  /**
   * The JWT, or a function called before every connection attempt that returns one. Optional with
   * `ticket` (a cookie may carry the token to the ticket endpoint instead).
   */
  token?: string | (() => string | Promise<string>);
  /**
   * One-time connection tickets, fetched before every connection attempt so the JWT never appears in a
   * URL: a function returning a ticket, or the URL of wsgate's `POST /auth/ticket` (called with the token
   * as `Authorization: Bearer` and `credentials: 'include'`). The socket then carries `?ticket=`.
   */
  ticket?: string | URL | (() => string | Promise<string>);
  /** Query parameter carrying the ticket (wsgate's auth.ticket_param). Defaults to 'ticket'. */
  ticketParam?: string;
  /**
   * 'handshake' (default): the token or ticket travels with the upgrade. 'first-message': for routes
   * with `auth: first_message`; the socket opens without a token, the client sends
   * {"type":"auth","token":...} and the connection is `open` once wsgate acknowledges it.
   */
  auth?: 'handshake' | 'first-message';
  /** How the token travels: ?token= (default) or a Sec-WebSocket-Protocol entry. */
  carrier?: 'query' | 'subprotocol';
  /** The application's own subprotocols. */
  protocols?: string | string[];
  /** Query parameter name for carrier 'query'. Defaults to 'token'. */
  queryParam?: string;
  backoff?: BackoffOptions;
  /** Messages held while not open. Defaults to 100; 0 disables queuing. When full, the newest is rejected. */
  queueLimit?: number;
  /** Unwrap wsgate.message envelopes and resume with since=<pos> on reconnect. Defaults to false. */
  resume?: boolean;
  /** Reconnect after a 1000 close too. Defaults to false. */
  reconnectOnNormalClose?: boolean;
  /** WebSocket implementation. Defaults to globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
}

export type State = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StateEvent {
  state: State;
  /** Close code that caused reconnecting/closed (1006 when the attempt failed before opening). */
  code?: number;
  reason?: string;
  wasClean?: boolean;
  /** closed: true when the app called close(). */
  byClient?: boolean;
  /** Consecutive retries since the last stable connection. */
  attempt?: number;
  /** reconnecting: ms until the next attempt (0 after 4001). */
  delay?: number;
  /** open after first-message auth: the identity wsgate verified. */
  user?: string;
  tenant?: string;
}

export interface MessageInfo {
  /** The payload parsed as JSON, or undefined when it is not JSON (or binary). */
  json: unknown;
  /** The envelope's pos when resume is on and the frame was a wsgate.message. */
  position?: string;
}

export interface DropEvent {
  data: unknown;
  /** queue_full: send while not open and the queue was full. closed: the connection ended. */
  reason: 'queue_full' | 'closed';
  queueLimit: number;
}

export interface RefetchEvent {
  /** close: code 4009 (subscription interrupted). recovery: the server could not resume. */
  source: 'close' | 'recovery';
  code?: number;
  reason?: string;
}

export interface RecoveryEvent {
  recovered: boolean;
  /** When not recovered: 'too_old' | 'epoch_changed' | 'bad_position'. */
  reason?: string;
  /** When recovered: how many missed messages follow. */
  replayed?: number;
}

export interface ConnectionEvents {
  state: (ev: StateEvent) => void;
  connecting: (ev: StateEvent) => void;
  open: (ev: StateEvent) => void;
  reconnecting: (ev: StateEvent) => void;
  closed: (ev: StateEvent) => void;
  /** data: the payload as a non-durable route would deliver it (string or ArrayBuffer). */
  message: (data: string | ArrayBuffer | Blob, info: MessageInfo) => void;
  drop: (ev: DropEvent) => void;
  refetch: (ev: RefetchEvent) => void;
  recovery: (ev: RecoveryEvent) => void;
  error: (err: unknown) => void;
}

export declare class Connection {
  constructor(options: ConnectOptions);
  readonly state: State;
  readonly protocol: string;
  readonly position: string | undefined;
  readonly queued: number;
  on<K extends keyof ConnectionEvents>(event: K, fn: ConnectionEvents[K]): () => void;
  /** `type:<name>` fires for JSON messages {"type": name, "data": ...} with (data, whole message). */
  on(event: `type:${string}`, fn: (data: any, message: any) => void): () => void;
  off(event: string, fn: (...args: any[]) => void): void;
  once<K extends keyof ConnectionEvents>(event: K, fn: ConnectionEvents[K]): () => void;
  once(event: `type:${string}`, fn: (data: any, message: any) => void): () => void;
  /** Sends now when open, else queues; false (and a drop event) when rejected. */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): boolean;
  /** Sends {"type": type, "data": data}. */
  sendJSON(type: string, data?: unknown): boolean;
  /** Closes for good: no reconnect. */
  close(code?: number, reason?: string): void;
}

export declare function connect(options: ConnectOptions): Connection;
