// The client against a small fake server built on the ws package: token
// carriers, the close-code table, backoff, the send queue, JSON helpers and
// resume envelopes. The real-wsgate behaviours live in wsgate.test.mjs.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { describe, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';

import { SUBPROTOCOL_PREFIX, closeAction, closeActions, connect } from '../src/index.js';
import { freePort, nextEvent, record, sleep, waitUntil } from './helpers.mjs';

/**
 * fakeServer starts a WebSocket server on 127.0.0.1. accept(req) decides the
 * handshake: true, or an HTTP status to reject with. onSocket(sock, req) runs
 * per accepted socket. Every handshake's URL and offered subprotocols are kept.
 */
async function fakeServer({ accept = () => true, onSocket = () => {}, port = 0 } = {}) {
  const handshakes = [];
  const sockets = new Set();
  const http = createServer();
  const wss = new WebSocketServer({
    server: http,
    verifyClient: (info, cb) => {
      const url = new URL(info.req.url, 'http://x');
      handshakes.push({ url, protocols: info.req.headers['sec-websocket-protocol'] });
      const verdict = accept(info.req, url);
      if (verdict === true) cb(true);
      else cb(false, verdict, 'rejected');
    },
    handleProtocols: (offered) => {
      for (const p of offered) if (!p.startsWith(SUBPROTOCOL_PREFIX)) return p;
      return false;
    },
  });
  wss.on('connection', (sock, req) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    onSocket(sock, req, new URL(req.url, 'http://x'));
  });
  await new Promise((resolve) => http.listen(port, '127.0.0.1', resolve));
  const actual = http.address().port;
  return {
    url: `ws://127.0.0.1:${actual}`,
    port: actual,
    handshakes,
    sockets,
    async close() {
      for (const s of sockets) s.terminate();
      wss.close();
      http.closeAllConnections?.();
      await new Promise((resolve) => http.close(resolve));
    },
  };
}

const fast = { initial: 20, max: 80, factor: 2 };

/** dial connects with the ws package and closes the connection when test t ends, pass or fail. */
function dial(t, options) {
  const conn = connect({ WebSocket, ...options });
  t.after(() => conn.close());
  return conn;
}

function counter(prefix = 't') {
  let n = 0;
  const provider = async () => `${prefix}${++n}`;
  provider.calls = () => n;
  return provider;
}

describe('token carriers', () => {
  test('query: ?token= carries the provider token, fetched again on every attempt', async (t) => {
    let opened = 0;
    const srv = await fakeServer({
      onSocket: (sock) => {
        if (++opened === 1) setTimeout(() => sock.close(1001, 'going away'), 20);
      },
    });
    t.after(() => srv.close());
    const token = counter('jwt-');
    const conn = dial(t, { url: `${srv.url}/ws/chat?room=1`, token, backoff: fast });
    const rec = record(conn);
    await waitUntil(() => rec.stateNames().filter((s) => s === 'open').length === 2, { what: 'second open' });
    conn.close();

    assert.deepEqual(
      srv.handshakes.map((h) => [h.url.pathname, h.url.searchParams.get('room'), h.url.searchParams.get('token')]),
      [
        ['/ws/chat', '1', 'jwt-1'],
        ['/ws/chat', '1', 'jwt-2'],
      ],
    );
    assert.equal(srv.handshakes[0].protocols, undefined);
    assert.deepEqual(rec.stateNames(), ['connecting', 'open', 'reconnecting', 'connecting', 'open', 'closed']);
    const rc = rec.states()[2];
    assert.equal(rc.code, 1001);
    assert.equal(rc.reason, 'going away');
    assert.equal(rc.attempt, 1);
    assert.ok(rc.delay >= 0 && rc.delay < fast.initial, `delay ${rc.delay}`);
  });

  test('subprotocol: the k8s bearer entry is offered after the app protocols, not the query', async (t) => {
    const srv = await fakeServer();
    t.after(() => srv.close());
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZT8_In0.c2ln+/=';
    const conn = dial(t, {
      url: `${srv.url}/ws/chat`,
      token: () => jwt,
      carrier: 'subprotocol',
      protocols: ['chat.v1', 'chat.v0'],
    });
    await nextEvent(conn, 'open');
    conn.close();

    const h = srv.handshakes[0];
    assert.equal(h.url.searchParams.has('token'), false);
    const offered = h.protocols.split(',').map((s) => s.trim());
    assert.equal(offered.length, 3);
    assert.deepEqual(offered.slice(0, 2), ['chat.v1', 'chat.v0']);
    assert.ok(offered[2].startsWith(SUBPROTOCOL_PREFIX));
    const encoded = offered[2].slice(SUBPROTOCOL_PREFIX.length);
    assert.match(encoded, /^[A-Za-z0-9_-]+$/, 'base64url without padding');
    assert.equal(Buffer.from(encoded, 'base64url').toString(), jwt);
    assert.equal(conn.protocol, 'chat.v1');
  });

  test('http(s) URLs map to ws(s), queryParam renames the parameter', async (t) => {
    const srv = await fakeServer();
    t.after(() => srv.close());
    const conn = dial(t, { url: `http://127.0.0.1:${srv.port}/x`, token: 'static', queryParam: 'access_token' });
    await nextEvent(conn, 'open');
    conn.close();
    assert.equal(srv.handshakes[0].url.searchParams.get('access_token'), 'static');
    assert.equal(srv.handshakes[0].url.searchParams.has('token'), false);
  });
});

describe('close codes', () => {
  // The contract: each code wsgate (or an upstream) closes with, and what the
  // client must do next.
  const table = [
    { code: 1000, want: 'closed' },
    { code: 1001, want: 'backoff' },
    { code: 1008, want: 'closed' },
    { code: 1009, want: 'closed' },
    { code: 1011, want: 'backoff' },
    { code: 1012, want: 'backoff' },
    { code: 1013, want: 'backoff' },
    { code: 1014, want: 'backoff' },
    { code: 4001, want: 'now' },
    { code: 4003, want: 'closed' },
    { code: 4008, want: 'backoff' },
    { code: 4009, want: 'backoff', refetch: true },
    { code: 4040, want: 'backoff' }, // any other 4xxx from the upstream
    { code: 3000, want: 'backoff' },
  ];

  for (const { code, want, refetch = false } of table) {
    test(`${code} → ${want}`, async (t) => {
      const srv = await fakeServer({
        onSocket: (sock, _req, url) => {
          if (url.searchParams.get('token') === 't1') {
            sock.send('{"type":"hello"}', () => sock.close(code, `reason ${code}`));
          }
        },
      });
      t.after(() => srv.close());
      const token = counter();
      const conn = dial(t, { url: srv.url, token, backoff: { initial: 200, max: 200, factor: 2 } });
      const rec = record(conn);
      const next = await waitUntil(() => rec.states().find((s) => s.state === 'reconnecting' || s.state === 'closed'), {
        what: `state after ${code}`,
      });
      // Give a wrongly scheduled retry the chance to show itself.
      await sleep(want === 'closed' ? 300 : 0);
      conn.close();

      assert.equal(next.code, code);
      assert.equal(next.reason, `reason ${code}`);
      assert.deepEqual(rec.messages(), [{ type: 'hello' }]);
      assert.equal(rec.named('refetch').length, refetch ? 1 : 0);
      if (refetch) assert.deepEqual(rec.named('refetch')[0][0], { source: 'close', code, reason: `reason ${code}` });
      switch (want) {
        case 'closed':
          assert.equal(next.state, 'closed');
          assert.equal(next.byClient, false);
          assert.equal(next.wasClean, true);
          assert.deepEqual(rec.stateNames(), ['connecting', 'open', 'closed'], 'no reconnect');
          assert.equal(token.calls(), 1);
          break;
        case 'now':
          assert.equal(next.state, 'reconnecting');
          assert.equal(next.delay, 0);
          assert.equal(next.attempt, 0, 'a token refresh is not a failed attempt');
          break;
        case 'backoff':
          assert.equal(next.state, 'reconnecting');
          assert.equal(next.attempt, 1);
          assert.ok(next.delay >= 0 && next.delay < 200, `delay ${next.delay}`);
          break;
      }
      assert.equal(closeAction(code), { closed: code === 1000 ? 'normal' : 'stop', now: 'refresh', backoff: refetch ? 'refetch' : 'backoff' }[want]);
    });
  }

  test('4001 fetches a new token and reconnects at once', async (t) => {
    const srv = await fakeServer({
      onSocket: (sock, _req, url) => {
        if (url.searchParams.get('token') === 't1') setTimeout(() => sock.close(4001, 'token expired'), 30);
        else sock.send(JSON.stringify({ type: 'hello', data: { token: url.searchParams.get('token') } }));
      },
    });
    t.after(() => srv.close());
    const token = counter();
    // A long backoff proves 4001 does not wait for it.
    const conn = dial(t, { url: srv.url, token, backoff: { initial: 60_000, max: 60_000, factor: 2 } });
    const rec = record(conn);
    const hello = await nextEvent(conn, 'type:hello');
    conn.close();
    assert.deepEqual(hello, { token: 't2' });
    assert.equal(token.calls(), 2);
    const rc = rec.states().find((s) => s.state === 'reconnecting');
    assert.equal(rc.code, 4001);
    assert.equal(rc.delay, 0);
  });

  test('a close frame without a code (1005) counts as normal', async (t) => {
    const srv = await fakeServer({ onSocket: (sock) => setTimeout(() => sock.close(), 20) });
    t.after(() => srv.close());
    const conn = dial(t, { url: srv.url, token: 't' });
    const rec = record(conn);
    const closed = await nextEvent(conn, 'closed');
    await sleep(100);
    assert.equal(closed.code, 1005);
    assert.deepEqual(rec.stateNames(), ['connecting', 'open', 'closed']);
  });

  test('reconnectOnNormalClose reconnects after 1000', async (t) => {
    const srv = await fakeServer({ onSocket: (sock, _r, url) => url.searchParams.get('token') === 't1' && sock.close(1000, 'bye') });
    t.after(() => srv.close());
    const conn = dial(t, { url: srv.url, token: counter(), backoff: fast, reconnectOnNormalClose: true });
    const rec = record(conn);
    await waitUntil(() => rec.stateNames().filter((s) => s === 'open').length === 2, { what: 'reopen' });
    conn.close();
    assert.equal(rec.states()[2].state, 'reconnecting');
    assert.equal(rec.states()[2].code, 1000);
  });

  test('a 401 before the upgrade is 1006: backoff, and every attempt asks the provider again', async (t) => {
    const srv = await fakeServer({ accept: (_req, url) => (url.searchParams.get('token') === 't4' ? true : 401) });
    t.after(() => srv.close());
    const token = counter();
    const conn = dial(t, { url: srv.url, token, backoff: fast });
    const rec = record(conn);
    await nextEvent(conn, 'open');
    conn.close();
    assert.equal(token.calls(), 4);
    const retries = rec.states().filter((s) => s.state === 'reconnecting');
    assert.deepEqual(
      retries.map((s) => [s.code, s.attempt]),
      [
        [1006, 1],
        [1006, 2],
        [1006, 3],
      ],
    );
    assert.ok(rec.named('error').length >= 3, 'transport errors are surfaced');
  });

  test('backoff: full jitter under a cap that grows by factor up to max', async (t) => {
    const port = await freePort(); // nothing listens: every attempt fails
    const conn = dial(t, { url: `ws://127.0.0.1:${port}`, token: 't', backoff: { initial: 10, max: 40, factor: 2 } });
    const rec = record(conn);
    await waitUntil(() => rec.states().filter((s) => s.state === 'reconnecting').length >= 8, { what: '8 retries' });
    conn.close();
    const retries = rec.states().filter((s) => s.state === 'reconnecting').slice(0, 8);
    retries.forEach((s, i) => {
      const cap = Math.min(40, 10 * 2 ** i);
      assert.equal(s.attempt, i + 1);
      assert.equal(s.code, 1006);
      assert.ok(Number.isInteger(s.delay) && s.delay >= 0 && s.delay < cap, `retry ${i + 1}: delay ${s.delay} cap ${cap}`);
    });
  });

  test('a failing token provider is an error and a backoff, not a crash', async (t) => {
    const srv = await fakeServer();
    t.after(() => srv.close());
    let n = 0;
    const conn = dial(t, {
      url: srv.url,
      token: async () => {
        if (++n === 1) throw new Error('identity provider down');
        return 'ok';
      },
      backoff: fast,
    });
    const rec = record(conn);
    await nextEvent(conn, 'open');
    conn.close();
    assert.equal(rec.named('error')[0][0].message, 'identity provider down');
    const rc = rec.states().find((s) => s.state === 'reconnecting');
    assert.deepEqual([rc.code, rc.reason, rc.attempt], [1006, 'token provider failed', 1]);
    assert.equal(srv.handshakes.length, 1);
  });

  test('close() while waiting to reconnect cancels the retry', async (t) => {
    const port = await freePort();
    const token = counter();
    const conn = dial(t, { url: `ws://127.0.0.1:${port}`, token, backoff: { initial: 300, max: 300, factor: 1 } });
    const rec = record(conn);
    await waitUntil(() => conn.state === 'reconnecting', { what: 'reconnecting' });
    conn.close(1000, 'done');
    const calls = token.calls();
    await sleep(400);
    assert.equal(token.calls(), calls);
    assert.equal(conn.state, 'closed');
    assert.deepEqual(rec.states().at(-1), { state: 'closed', code: 1000, reason: 'done', wasClean: true, byClient: true });
  });

  test('every listed code has a known action; the table matches wsgate', () => {
    assert.deepEqual(
      Object.fromEntries(Object.entries(closeActions).map(([k, v]) => [Number(k), v])),
      {
        1000: 'normal', 1001: 'backoff', 1002: 'stop', 1003: 'stop', 1005: 'normal', 1006: 'backoff',
        1007: 'stop', 1008: 'stop', 1009: 'stop', 1011: 'backoff', 1012: 'backoff', 1013: 'backoff',
        1014: 'backoff', 4001: 'refresh', 4003: 'stop', 4008: 'backoff', 4009: 'refetch', 4401: 'backoff', 4403: 'stop',
      },
    );
    assert.equal(closeAction(4999), 'backoff');
  });
});

describe('send queue', () => {
  test('holds queueLimit messages while disconnected, rejects newer ones, flushes in order', async (t) => {
    let accepting = false;
    const received = [];
    const srv = await fakeServer({
      accept: () => (accepting ? true : 503),
      onSocket: (sock) => sock.on('message', (data) => received.push(data.toString())),
    });
    t.after(() => srv.close());
    const conn = dial(t, { url: srv.url, token: 't', queueLimit: 3, backoff: fast });
    const rec = record(conn);
    const results = ['m1', 'm2', 'm3', 'm4', 'm5'].map((m) => conn.send(m));
    assert.deepEqual(results, [true, true, true, false, false]);
    assert.equal(conn.queued, 3);
    assert.deepEqual(
      rec.named('drop').map(([d]) => d),
      [
        { data: 'm4', reason: 'queue_full', queueLimit: 3 },
        { data: 'm5', reason: 'queue_full', queueLimit: 3 },
      ],
    );
    await waitUntil(() => srv.handshakes.length >= 2, { what: 'two refused attempts' });
    accepting = true;
    await nextEvent(conn, 'open');
    assert.equal(conn.sendJSON('ping', { n: 1 }), true);
    await waitUntil(() => received.length === 4, { what: '4 messages' });
    conn.close();
    assert.deepEqual(received, ['m1', 'm2', 'm3', '{"type":"ping","data":{"n":1}}']);
    assert.equal(conn.queued, 0);
  });

  test('close() drops what is queued, and send after close is rejected', async (t) => {
    const port = await freePort();
    const conn = dial(t, { url: `ws://127.0.0.1:${port}`, token: 't', queueLimit: 2 });
    const rec = record(conn);
    conn.send('a');
    conn.send('b');
    conn.close();
    assert.equal(conn.send('c'), false);
    assert.deepEqual(
      rec.named('drop').map(([d]) => [d.data, d.reason]),
      [
        ['a', 'closed'],
        ['b', 'closed'],
        ['c', 'closed'],
      ],
    );
  });

  test('queueLimit 0 rejects every send while not open', async (t) => {
    const port = await freePort();
    const conn = dial(t, { url: `ws://127.0.0.1:${port}`, token: 't', queueLimit: 0 });
    const rec = record(conn);
    assert.equal(conn.send('x'), false);
    conn.close();
    assert.deepEqual(rec.named('drop')[0][0], { data: 'x', reason: 'queue_full', queueLimit: 0 });
  });
});

describe('messages', () => {
  test('message delivers text untouched; type:<name> delivers envelope data; binary is an ArrayBuffer', async (t) => {
    const frames = [
      '{"type":"token","data":{"token":"Revenue","index":0}}',
      'not json',
      '{"type":"complete","data":{"tokens":1}}',
    ];
    const srv = await fakeServer({
      onSocket: (sock) => {
        for (const f of frames) sock.send(f);
        sock.send(Buffer.from([1, 2, 3]));
      },
    });
    t.after(() => srv.close());
    const conn = dial(t, { url: srv.url, token: 't' });
    const raw = [];
    const tokens = [];
    conn.on('message', (data) => raw.push(data));
    conn.on('type:token', (data, msg) => tokens.push([data, msg.type]));
    const complete = nextEvent(conn, 'type:complete');
    await waitUntil(() => raw.length === 4, { what: '4 messages' });
    conn.close();
    assert.deepEqual(raw.slice(0, 3), frames);
    assert.ok(raw[3] instanceof ArrayBuffer);
    assert.deepEqual([...new Uint8Array(raw[3])], [1, 2, 3]);
    assert.deepEqual(tokens, [[{ token: 'Revenue', index: 0 }, 'token']]);
    assert.deepEqual(await complete, { tokens: 1 });
  });

  test('a throwing listener does not stop other listeners or the connection', async (t) => {
    const srv = await fakeServer({ onSocket: (sock) => sock.send('{"type":"a"}') });
    t.after(() => srv.close());
    const conn = dial(t, { url: srv.url, token: 't' });
    // Browsers have reportError; Node 20 does not, where the error is thrown
    // from a timer instead. Catch it here either way.
    const uncaught = new Promise((resolve) => {
      globalThis.reportError = resolve;
    });
    t.after(() => delete globalThis.reportError);
    conn.on('message', () => {
      throw new Error('app bug');
    });
    const second = nextEvent(conn, 'message');
    assert.equal(await second, '{"type":"a"}');
    assert.equal((await uncaught).message, 'app bug');
    assert.equal(conn.state, 'open');
    conn.close();
  });
});

describe('resume', () => {
  const envelopes = [
    '{"type":"wsgate.message","pos":"7-1","data":{"type":"token","data":{"token":"Revenue","index":0}}}',
    '{"type":"wsgate.message","pos":"7-2","text":"plain words"}',
    '{"type":"token","data":{"token":"untouched","index":9}}',
    '{"type":"wsgate.message","pos":"7-3","data":{"type":"complete","data":{"tokens":2}}}',
  ];

  test('unwraps envelopes, remembers pos, sends since= on reconnect, surfaces recovery', async (t) => {
    const srv = await fakeServer({
      onSocket: (sock, _req, url) => {
        if (!url.searchParams.has('since')) {
          for (const f of envelopes) sock.send(f);
          sock.send('{"type":"wsgate.future","x":1}', () => sock.close(1012, 'restart'));
        } else {
          sock.send('{"type":"wsgate.recovery","recovered":false,"reason":"too_old"}');
          sock.send('{"type":"wsgate.message","pos":"8-0","data":{"type":"hello"}}');
        }
      },
    });
    t.after(() => srv.close());
    const conn = dial(t, { url: `${srv.url}/ws/ai/stream/s1`, token: 't', resume: true, backoff: fast });
    const rec = record(conn);
    const tokens = [];
    conn.on('type:token', (d) => tokens.push(d));
    await waitUntil(() => rec.messages().length === 5, { what: '5 app messages' });
    conn.close();

    assert.deepEqual(
      srv.handshakes.map((h) => h.url.searchParams.get('since')),
      [null, '7-3'],
    );
    const msgs = rec.named('message');
    assert.deepEqual(
      msgs.map(([data, info]) => [data, info.position]),
      [
        ['{"type":"token","data":{"token":"Revenue","index":0}}', '7-1'],
        ['plain words', '7-2'],
        ['{"type":"token","data":{"token":"untouched","index":9}}', undefined],
        ['{"type":"complete","data":{"tokens":2}}', '7-3'],
        ['{"type":"hello"}', '8-0'],
      ],
    );
    assert.equal(msgs[1][1].json, undefined, 'text envelopes are not JSON');
    assert.deepEqual(tokens, [
      { token: 'Revenue', index: 0 },
      { token: 'untouched', index: 9 },
    ]);
    assert.deepEqual(rec.named('recovery'), [[{ recovered: false, reason: 'too_old' }]]);
    assert.deepEqual(rec.named('refetch'), [[{ source: 'recovery', reason: 'too_old' }]]);
    assert.equal(conn.position, '8-0');
  });

  test('recovered:true is a recovery event without a refetch', async (t) => {
    const srv = await fakeServer({ onSocket: (sock) => sock.send('{"type":"wsgate.recovery","recovered":true,"replayed":3}') });
    t.after(() => srv.close());
    const conn = dial(t, { url: srv.url, token: 't', resume: true });
    const rec = record(conn);
    await waitUntil(() => rec.named('recovery').length === 1, { what: 'recovery' });
    conn.close();
    assert.deepEqual(rec.named('recovery')[0][0], { recovered: true, reason: undefined, replayed: 3 });
    assert.equal(rec.named('refetch').length, 0);
    assert.equal(rec.named('message').length, 0);
  });

  test('a binary envelope (base64) reaches the app as bytes', async (t) => {
    const srv = await fakeServer({ onSocket: (sock) => sock.send('{"type":"wsgate.message","pos":"9-1","binary":"/wA="}') });
    t.after(() => srv.close());
    const conn = dial(t, { url: srv.url, token: 't', resume: true });
    const rec = record(conn);
    await waitUntil(() => rec.named('message').length === 1, { what: 'one message' });
    conn.close();
    const [data, info] = rec.named('message')[0];
    assert.ok(data instanceof Uint8Array, 'bytes');
    assert.deepEqual([...data], [0xff, 0x00]);
    assert.equal(info.position, '9-1');
  });

  test('without resume, envelopes are delivered untouched and since= is never sent', async (t) => {
    const srv = await fakeServer({
      onSocket: (sock, _req, url) => {
        sock.send(envelopes[0]);
        if (srv.handshakes.length === 1) setTimeout(() => sock.close(1001), 20);
        void url;
      },
    });
    t.after(() => srv.close());
    const conn = dial(t, { url: srv.url, token: 't', backoff: fast });
    const rec = record(conn);
    await waitUntil(() => rec.named('message').length === 2, { what: 'two messages' });
    conn.close();
    assert.deepEqual(rec.named('message').map(([d]) => d), [envelopes[0], envelopes[0]]);
    assert.deepEqual(srv.handshakes.map((h) => h.url.searchParams.has('since')), [false, false]);
    assert.equal(conn.position, undefined);
  });
});

describe('runtimes', () => {
  test('uses globalThis.WebSocket when present (Node with --experimental-websocket, browsers)', async (t) => {
    const srv = await fakeServer({ onSocket: (sock) => sock.send('{"type":"hello","data":{"via":"global"}}') });
    t.after(() => srv.close());
    const script = `
      import { connect } from ${JSON.stringify(new URL('../src/index.js', import.meta.url).href)};
      const conn = connect({ url: process.env.URL, token: 't' });
      conn.on('type:hello', (data) => { console.log(JSON.stringify(data)); conn.close(); });
      conn.on('error', (err) => { console.error(String(err?.message ?? err)); process.exit(2); });
    `;
    const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', '--input-type=module', '-e', script], {
      env: { ...process.env, URL: srv.url },
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const code = await nextEvent(child, 'exit');
    assert.equal(code, 0, out);
    assert.equal(out.trim(), '{"via":"global"}');
  });
});

describe('options', () => {
  test('reject what cannot work before dialling', () => {
    const base = { url: 'ws://127.0.0.1:1', token: 't', WebSocket };
    assert.throws(() => connect({ ...base, WebSocket: undefined }), /no WebSocket implementation/);
    assert.throws(() => connect({ ...base, url: undefined }), /url is required/);
    assert.throws(() => connect({ ...base, token: 42 }), /token must be/);
    assert.throws(() => connect({ ...base, carrier: 'cookie' }), /carrier must be/);
    assert.throws(() => connect({ ...base, carrier: 'subprotocol' }), /needs protocols/);
    assert.throws(() => connect({ ...base, queueLimit: -1 }), /queueLimit/);
    assert.throws(() => connect({ ...base, backoff: { initial: 0 } }), /backoff/);
  });
});
