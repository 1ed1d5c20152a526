// @wsgate/client/react: useWsgate, a React hook over the client in index.js.
//
// The hook owns one Connection per (url, enabled) and closes it on unmount;
// reconnect, token refresh and resume are the client's, unchanged.

import { useCallback, useEffect, useRef, useState } from 'react';

import { connect } from './index.js';

// Hook-only options; everything else goes to connect() as given.
const HOOK_OPTIONS = new Set(['enabled', 'keep', 'on']);
const DEFAULT_KEEP = 100;

/**
 * useWsgate keeps a connection to url open while the component is mounted
 * (and options.enabled is not false) and returns its state, the last
 * options.keep messages (default 100) and send functions.
 *
 * Options are those of connect(), passed through unchanged, plus `enabled`,
 * `keep` and `on` (a map of event name to listener, e.g.
 * {'type:token': fn, refetch: fn}). The connection is replaced when url or
 * enabled changes; other options are read when it starts, except that
 * function-valued `token` and `ticket` options and the `on` listeners are
 * always called in their latest version, so inline arrows are fine.
 */
export function useWsgate(url, options = {}) {
  const latest = useRef(options);
  latest.current = options;
  const enabled = options.enabled !== false && url != null && url !== '';
  const key = enabled ? String(url) : '';

  const [snapshot, setSnapshot] = useState(() => initial());
  const connRef = useRef(null);

  useEffect(() => {
    if (!key) {
      setSnapshot((s) => (s.state === 'idle' && s.connection === null && s.messages.length === 0 ? s : initial()));
      return undefined;
    }
    const conn = connect(clientOptions(key, latest));
    connRef.current = conn;
    // Another url is another stream: its messages start empty.
    setSnapshot({ ...initial(), state: conn.state, connection: conn });
    const offs = [
      conn.on('state', (ev) =>
        setSnapshot((s) => ({
          ...s,
          state: ev.state,
          position: conn.position,
          closeEvent: ev.state === 'reconnecting' || ev.state === 'closed' ? ev : s.closeEvent,
        })),
      ),
      conn.on('message', (data, info) => {
        const message = { data, json: info.json, position: info.position };
        const keep = keepOf(latest.current.keep);
        setSnapshot((s) => {
          const messages = keep === 0 ? s.messages : [...s.messages, message].slice(-keep);
          return { ...s, messages, lastMessage: message, position: conn.position };
        });
      }),
      conn.on('error', (error) => setSnapshot((s) => ({ ...s, error }))),
    ];
    // `on` listeners: attached per event name that appears in the options
    // now; each call looks up the latest listener.
    for (const name of Object.keys(latest.current.on ?? {})) {
      offs.push(conn.on(name, (...args) => latest.current.on?.[name]?.(...args)));
    }
    return () => {
      for (const off of offs) off();
      if (connRef.current === conn) connRef.current = null;
      conn.close(1000, '');
    };
  }, [key]);

  const send = useCallback((data) => connRef.current?.send(data) ?? false, []);
  const sendJSON = useCallback((type, data) => connRef.current?.sendJSON(type, data) ?? false, []);
  const clearMessages = useCallback(() => setSnapshot((s) => ({ ...s, messages: [], lastMessage: undefined })), []);

  return { ...snapshot, send, sendJSON, clearMessages };
}

function initial() {
  return {
    state: 'idle',
    messages: [],
    lastMessage: undefined,
    position: undefined,
    closeEvent: undefined,
    error: undefined,
    connection: null,
  };
}

function keepOf(keep) {
  if (keep === undefined) return DEFAULT_KEEP;
  if (!Number.isInteger(keep) || keep < 0) throw new TypeError('useWsgate: keep must be a non-negative integer');
  return keep;
}

function clientOptions(url, latest) {
  const out = { url };
  for (const [name, value] of Object.entries(latest.current)) {
    if (HOOK_OPTIONS.has(name) || name === 'url') continue;
    // Credentials providers are called before every attempt: call the
    // newest one the component rendered, not the one from the first render.
    out[name] =
      (name === 'token' || name === 'ticket') && typeof value === 'function'
        ? (...args) => (typeof latest.current[name] === 'function' ? latest.current[name](...args) : latest.current[name])
        : value;
  }
  keepOf(latest.current.keep);
  return out;
}
