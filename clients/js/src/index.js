// @wsgate/client: a reconnecting WebSocket client for wsgate.
//
// One dependency-free ES module. It runs in browsers and in Node 20+ (pass a
// WebSocket implementation such as the `ws` package where globalThis has none).
// wsgate serves this exact file at /wsgate-client.js.

/**
 * What the client does after each close code. `normal`: closed, no reconnect
 * unless reconnectOnNormalClose. `stop`: closed, the reason is surfaced.
 * `backoff`: reconnect after an exponential, fully jittered delay.
 * `refresh`: fetch a new token and reconnect at once. `refetch`: like
 * backoff, and a `refetch` event tells the app that messages may be lost.
 * Codes not listed here reconnect with backoff.
 */
export const closeActions = Object.freeze({
  1000: 'normal', // normal closure, passed through from the upstream
  1001: 'backoff', // going away: wsgate drains, or the peer left
  1002: 'stop', // protocol error: a retry would break the same way
  1003: 'stop', // unsupported data
  1005: 'normal', // close frame without a code: treated as 1000
  1006: 'backoff', // connection failed, including 401/403 before the upgrade
  1007: 'stop', // invalid payload (text that is not UTF-8)
  1008: 'stop', // policy violation, e.g. message rate limit
  1009: 'stop', // message too big
  1011: 'backoff', // internal error, upstream heartbeat timeout
  1012: 'backoff', // service restart
  1013: 'backoff', // try again later
  1014: 'backoff', // bad gateway: the upstream vanished
  4001: 'refresh', // token expired
  4003: 'stop', // forbidden, e.g. the route takes no client messages
  4008: 'backoff', // slow consumer
  4009: 'refetch', // subscription interrupted: messages may be lost
  4401: 'backoff', // first-message auth failed: a new token is asked for before the retry
  4403: 'stop', // first-message auth: the token does not grant this path
});

/** closeAction returns what the client does after a close with code. */
export function closeAction(code) {
  return closeActions[code] ?? 'backoff';
}

/** The subprotocol prefix Kubernetes uses to carry a bearer token. */
export const SUBPROTOCOL_PREFIX = 'base64url.bearer.authorization.k8s.io.';

const DEFAULT_BACKOFF = Object.freeze({ initial: 500, max: 30_000, factor: 2 });
const DEFAULT_QUEUE_LIMIT = 100;
// A connection that stayed open this long resets the backoff, so a server
// that accepts and then closes at once cannot drive a tight reconnect loop.
const STABLE_AFTER_MS = 5_000;
const OPEN = 1;

/**
 * connect opens a connection to url and keeps it open: it reconnects after
 * each close as closeActions says, calling options.token before every attempt.
 * The first attempt starts in a microtask, so listeners added right after
 * connect() returns see every event.
 */
export function connect(options) {
  return new Connection(options);
}

/**
 * Connection is one logical connection to wsgate, which may span many
 * sockets. Events: state (every change), connecting, open, reconnecting,
 * closed, message, type:<name>, drop, refetch, recovery, error.
 */
export class Connection {
  // Static after construction.
  #url;
  #token;
  #carrier;
  #protocols;
  #queryParam;
  #ticket; // a function returning a ticket, or the ticket endpoint's URL; undefined: no tickets
  #ticketParam;
  #firstMessage;
  #backoff;
  #queueLimit;
  #resume;
  #reconnectOnNormalClose;
  #WebSocket;
  #listeners = new Map();

  // Mutable state; the module runs on one event loop, so no locks.
  #state = 'idle';
  #ws = null; // the current socket, or null between sockets
  #protocol = '';
  #generation = 0; // bumps on every attempt; stale callbacks compare it
  #retries = 0; // consecutive reconnects since the last stable connection
  #openedAt = 0;
  #timer = null;
  #queue = [];
  #position; // last wsgate.message pos, when resume is on
  #stopped = false;
  #authToken = null; // first-message auth: the token to send once the socket opens
  #awaitingAck = false; // first-message auth: sent, wsgate.auth not yet received

  constructor(options = {}) {
    const {
      url,
      token,
      carrier = 'query',
      protocols = [],
      queryParam = 'token',
      ticket,
      ticketParam = 'ticket',
      auth = 'handshake',
      backoff = {},
      queueLimit = DEFAULT_QUEUE_LIMIT,
      resume = false,
      reconnectOnNormalClose = false,
      WebSocket: impl = globalThis.WebSocket,
    } = options;
    if (typeof url !== 'string' && !(url instanceof URL)) {
      throw new TypeError('wsgate: url is required');
    }
    if (token !== undefined && typeof token !== 'string' && typeof token !== 'function') {
      throw new TypeError('wsgate: token must be a string or a function returning one');
    }
    if (ticket !== undefined && typeof ticket !== 'function' && typeof ticket !== 'string' && !(ticket instanceof URL)) {
      throw new TypeError('wsgate: ticket must be a function returning a ticket, or the URL of the ticket endpoint');
    }
    if (auth !== 'handshake' && auth !== 'first-message') {
      throw new TypeError(`wsgate: auth must be 'handshake' or 'first-message', not ${auth}`);
    }
    if (auth === 'first-message' && (token === undefined || ticket !== undefined)) {
      throw new TypeError("wsgate: auth 'first-message' sends the token itself: pass token, not ticket");
    }
    if (token === undefined && ticket === undefined) {
      throw new TypeError('wsgate: token or ticket is required');
    }
    if (carrier !== 'query' && carrier !== 'subprotocol') {
      throw new TypeError(`wsgate: carrier must be 'query' or 'subprotocol', not ${carrier}`);
    }
    if (carrier === 'subprotocol' && protocols.length === 0) {
      // Browsers fail a handshake whose answer selects no subprotocol after
      // they offered one, and the token entry itself is never selected.
      throw new TypeError("wsgate: carrier 'subprotocol' needs protocols: an app subprotocol the server selects");
    }
    if (typeof impl !== 'function') {
      throw new TypeError('wsgate: no WebSocket implementation; pass options.WebSocket (for example from the ws package)');
    }
    if (!Number.isInteger(queueLimit) || queueLimit < 0) {
      throw new TypeError('wsgate: queueLimit must be a non-negative integer');
    }
    const b = { ...DEFAULT_BACKOFF, ...backoff };
    if (!(b.initial > 0 && b.max >= b.initial && b.factor >= 1)) {
      throw new TypeError('wsgate: backoff needs initial > 0, max >= initial, factor >= 1');
    }
    this.#url = String(url);
    this.#token = token;
    this.#carrier = carrier;
    this.#protocols = typeof protocols === 'string' ? [protocols] : [...protocols];
    this.#queryParam = queryParam;
    this.#ticket = ticket instanceof URL ? ticket.href : ticket;
    this.#ticketParam = ticketParam;
    this.#firstMessage = auth === 'first-message';
    this.#backoff = b;
    this.#queueLimit = queueLimit;
    this.#resume = Boolean(resume);
    this.#reconnectOnNormalClose = Boolean(reconnectOnNormalClose);
    this.#WebSocket = impl;
    queueMicrotask(() => this.#dial());
  }

  /** connecting | open | reconnecting | closed ('idle' before the first attempt). */
  get state() {
    return this.#state;
  }

  /** The subprotocol the server selected on the current socket. */
  get protocol() {
    return this.#protocol;
  }

  /** The last resume position received (resume: true), sent as since= on reconnect. */
  get position() {
    return this.#position;
  }

  /** How many messages wait for the next open socket. */
  get queued() {
    return this.#queue.length;
  }

  /** on adds a listener and returns a function that removes it. */
  on(event, fn) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  /** once adds a listener that runs for the next event only. */
  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  /**
   * send sends data now when open, else queues it for the next open socket.
   * The queue holds at most queueLimit messages; when it is full the newest
   * message is rejected: send returns false and emits `drop`. Messages already
   * queued keep their order and are never dropped to make room.
   */
  send(data) {
    if (this.#stopped) {
      this.#drop(data, 'closed');
      return false;
    }
    if (this.#state === 'open' && this.#ws?.readyState === OPEN) {
      this.#ws.send(data);
      return true;
    }
    if (this.#queue.length >= this.#queueLimit) {
      this.#drop(data, 'queue_full');
      return false;
    }
    this.#queue.push(data);
    return true;
  }

  /** sendJSON sends {"type": type, "data": data} as a text message. */
  sendJSON(type, data) {
    return this.send(JSON.stringify(data === undefined ? { type } : { type, data }));
  }

  /**
   * close ends the connection for good: no reconnect. Queued messages are
   * dropped (one `drop` event each) and `closed` is emitted at once.
   */
  close(code = 1000, reason = '') {
    if (this.#stopped) return;
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      detach(ws);
      ws.close(code, reason);
    }
    this.#finish({ code, reason, wasClean: true, byClient: true });
  }

  async #dial() {
    if (this.#stopped) return;
    const generation = ++this.#generation;
    this.#emitState('connecting', { attempt: this.#retries });
    let cred;
    try {
      cred = await this.#credential();
    } catch (err) {
      if (generation !== this.#generation || this.#stopped) return;
      this.#emit('error', err);
      this.#retry(1006, this.#ticket !== undefined ? 'ticket provider failed' : 'token provider failed', 'backoff');
      return;
    }
    if (generation !== this.#generation || this.#stopped) return;

    let ws;
    try {
      this.#authToken = this.#firstMessage ? cred.token : null;
      ws = new this.#WebSocket(this.#socketURL(cred), this.#socketProtocols(cred));
    } catch (err) {
      this.#emit('error', err);
      // Not err.message: a URL error would carry the token into the reason.
      this.#retry(1006, 'WebSocket constructor failed', 'backoff');
      return;
    }
    this.#ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this.#opened(ws);
    ws.onmessage = (ev) => {
      if (this.#ws === ws) this.#receive(ev.data);
    };
    // An error is always followed by a close, which decides what happens.
    ws.onerror = (ev) => {
      if (this.#ws === ws) this.#emit('error', ev?.error ?? ev);
    };
    ws.onclose = (ev) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.#closed(ev.code, ev.reason ?? '', Boolean(ev.wasClean));
    };
  }

  /**
   * credential asks for what the next socket authenticates with: a fresh
   * ticket (from the ticket function, or POSTed for at the ticket endpoint
   * with the token as a Bearer header and the page's cookies), or the token.
   */
  async #credential() {
    let token;
    if (this.#token !== undefined) {
      token = typeof this.#token === 'function' ? await this.#token() : this.#token;
      if (typeof token !== 'string' || token === '') {
        throw new TypeError('wsgate: token provider returned no token');
      }
    }
    if (this.#ticket === undefined) return { token };
    const ticket = typeof this.#ticket === 'function' ? await this.#ticket() : await fetchTicket(this.#ticket, token);
    if (typeof ticket !== 'string' || ticket === '') {
      throw new TypeError('wsgate: ticket provider returned no ticket');
    }
    return { ticket };
  }

  #socketURL({ token, ticket }) {
    const u = new URL(this.#url, globalThis.location?.href);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    if (ticket !== undefined) u.searchParams.set(this.#ticketParam, ticket);
    else if (this.#carrier === 'query' && !this.#firstMessage) u.searchParams.set(this.#queryParam, token);
    if (this.#resume && this.#position !== undefined) u.searchParams.set('since', this.#position);
    return u.href;
  }

  #socketProtocols({ token, ticket }) {
    if (this.#carrier !== 'subprotocol' || ticket !== undefined || this.#firstMessage) return this.#protocols;
    return [...this.#protocols, SUBPROTOCOL_PREFIX + base64url(token)];
  }

  #opened(ws) {
    if (this.#ws !== ws) return;
    this.#openedAt = Date.now();
    this.#protocol = ws.protocol ?? '';
    if (this.#authToken !== null) {
      // First-message auth: open once wsgate acknowledges (#receive).
      ws.send(JSON.stringify({ type: 'auth', token: this.#authToken }));
      this.#authToken = null;
      this.#awaitingAck = true;
      return;
    }
    this.#ready(ws, {});
  }

  #ready(ws, detail) {
    const queued = this.#queue;
    this.#queue = [];
    for (const data of queued) ws.send(data);
    this.#emitState('open', { attempt: this.#retries, ...detail });
  }

  #closed(code, reason, wasClean) {
    this.#awaitingAck = false;
    if (this.#openedAt && Date.now() - this.#openedAt >= STABLE_AFTER_MS) this.#retries = 0;
    this.#openedAt = 0;
    const action = closeAction(code);
    if (action === 'stop' || (action === 'normal' && !this.#reconnectOnNormalClose)) {
      this.#finish({ code, reason, wasClean, byClient: false });
      return;
    }
    if (action === 'refetch') this.#emit('refetch', { source: 'close', code, reason });
    this.#retry(code, reason, action);
  }

  #retry(code, reason, action) {
    let delay = 0;
    if (action !== 'refresh') {
      this.#retries++;
      const { initial, max, factor } = this.#backoff;
      const cap = Math.min(max, initial * factor ** (this.#retries - 1));
      delay = Math.floor(Math.random() * cap); // full jitter
    }
    this.#emitState('reconnecting', { code, reason, attempt: this.#retries, delay });
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#dial();
    }, delay);
  }

  #finish(detail) {
    this.#stopped = true;
    this.#generation++;
    clearTimeout(this.#timer);
    this.#timer = null;
    const dropped = this.#queue;
    this.#queue = [];
    this.#emitState('closed', detail);
    for (const data of dropped) this.#drop(data, 'closed');
  }

  #receive(raw) {
    if (this.#awaitingAck) {
      const ack = typeof raw === 'string' ? parseJSON(raw) : undefined;
      if (ack?.type === 'wsgate.auth' && ack.ok === true) {
        this.#awaitingAck = false;
        this.#ready(this.#ws, { user: ack.user, tenant: ack.tenant });
      }
      return; // nothing else arrives before the acknowledgement
    }
    let data = raw;
    let json;
    let position;
    if (typeof raw === 'string') {
      json = parseJSON(raw);
      if (this.#resume && isWsgateFrame(json)) {
        switch (json.type) {
          case 'wsgate.message':
            if (typeof json.pos === 'string') this.#position = position = json.pos;
            if ('data' in json) {
              json = json.data;
              data = JSON.stringify(json);
            } else if (typeof json.binary === 'string') {
              // A payload that was not UTF-8: base64 in the envelope, bytes for the app.
              data = Uint8Array.from(atob(json.binary), (c) => c.charCodeAt(0));
              json = undefined;
            } else {
              data = String(json.text ?? '');
              json = undefined;
            }
            break;
          case 'wsgate.recovery': {
            const detail = { recovered: json.recovered === true, reason: json.reason };
            if (typeof json.replayed === 'number') detail.replayed = json.replayed;
            this.#emit('recovery', detail);
            if (!detail.recovered) this.#emit('refetch', { source: 'recovery', reason: json.reason });
            return;
          }
          default:
            return; // a wsgate control frame this version does not know
        }
      }
    }
    this.#emit('message', data, { json, position });
    if (json !== null && typeof json === 'object' && typeof json.type === 'string') {
      this.#emit(`type:${json.type}`, json.data, json);
    }
  }

  #drop(data, reason) {
    this.#emit('drop', { data, reason, queueLimit: this.#queueLimit });
  }

  #emitState(state, detail) {
    this.#state = state;
    const ev = { state, ...detail };
    this.#emit('state', ev);
    this.#emit(state, ev);
  }

  #emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        // A listener's bug must not break the connection or the other
        // listeners; report it as an uncaught error in an event handler.
        report(err);
      }
    }
  }
}

/**
 * fetchTicket POSTs to the ticket endpoint: the token (if any) as a Bearer
 * header, the page's cookies with credentials: 'include' (a cross-origin
 * endpoint must list the page in allowed_origins).
 */
async function fetchTicket(url, token) {
  const headers = token === undefined ? {} : { Authorization: `Bearer ${token}` };
  const res = await fetch(new URL(url, globalThis.location?.href), { method: 'POST', credentials: 'include', headers });
  if (!res.ok) {
    await res.body?.cancel();
    // Not the body: it is the server's, and the status says enough.
    throw new Error(`wsgate: ticket request failed with HTTP ${res.status}`);
  }
  const body = await res.json();
  return body?.ticket;
}

function report(err) {
  if (typeof globalThis.reportError === 'function') {
    globalThis.reportError(err);
  } else {
    setTimeout(() => {
      throw err;
    });
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {}; // the ws package throws on an error nobody listens to
}

function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isWsgateFrame(v) {
  return v !== null && typeof v === 'object' && typeof v.type === 'string' && v.type.startsWith('wsgate.');
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
