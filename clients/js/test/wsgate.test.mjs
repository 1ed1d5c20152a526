// The client against a real `wsgate demo` process (WSGATE_BIN): token expiry,
// drain on SIGTERM, forbidden routes, the bridge and the bounded send queue.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';

import { connect } from '../src/index.js';
import { freePort, needsWsgate, nextEvent, record, sleep, startWsgate, waitUntil } from './helpers.mjs';

const fast = { initial: 100, max: 1000, factor: 2 };

/** tokensOf lists the type:token payloads a recorder saw, and the completes. */
function stream(rec) {
  return rec
    .messages()
    .filter((m) => m?.type === 'token' || m?.type === 'complete')
    .map((m) => (m.type === 'token' ? [m.data.index, m.data.token] : ['complete', m.data.tokens]));
}

/** wordStream is the token stream the demo sends for text: one token per word, then complete. */
function wordStream(text) {
  const words = text.split(' ');
  return [...words.map((w, i) => [i, w]), ['complete', words.length]];
}

/** The demo upstream answers a chat message with `echo: <message>`. */
const echoStream = (message) => wordStream(`echo: ${message}`);

/** The demo AI service answers /demo/ask with `answer: <prompt>`. */
const answerStream = (prompt) => wordStream(`answer: ${prompt}`);

/** provider mints a fresh demo token per call and counts the calls. */
function provider(gate, opts) {
  let calls = 0;
  const fn = async () => {
    calls++;
    return gate.token(opts);
  };
  fn.calls = () => calls;
  return fn;
}

describe('wsgate demo', { skip: needsWsgate }, () => {
  let gate;
  before(async () => {
    // No clock-skew allowance, so a 3 s token ends the socket after 3 s, not 33.
    gate = await startWsgate({ env: { WSGATE_AUTH_LEEWAY: '0s' } });
  });
  after(() => gate?.stop('SIGKILL'));

  test('chat: the upstream sees the token identity and streams the echo', async (t) => {
    const conn = connect({ url: `${gate.ws}/ws/chat`, token: provider(gate, { user: 'alice', tenant: 'demo' }), WebSocket });
    t.after(() => conn.close());
    const rec = record(conn);
    const hello = await nextEvent(conn, 'type:hello');
    assert.deepEqual(hello, { user: 'alice', tenant: 'demo' });
    conn.send('hello there');
    await waitUntil(() => stream(rec).some(([k]) => k === 'complete'), { what: 'complete' });
    assert.deepEqual(stream(rec), echoStream('hello there'));
    assert.deepEqual(rec.stateNames(), ['connecting', 'open']);
  });

  test('subprotocol carrier: wsgate authenticates the k8s-style Sec-WebSocket-Protocol entry', async (t) => {
    // A WebSocket class that records the URLs it dials and the handshake statuses.
    const spy = () => {
      const seen = { urls: [], statuses: [] };
      seen.WebSocket = class extends WebSocket {
        constructor(url, protocols) {
          super(url, protocols);
          seen.urls.push(new URL(url));
          this.on('upgrade', (res) => seen.statuses.push(res.statusCode));
        }
      };
      return seen;
    };
    const once = { initial: 60_000, max: 60_000, factor: 1 }; // no second attempt within the test
    const good = spy();
    const goodConn = connect({
      url: `${gate.ws}/ws/chat`,
      token: () => gate.token({ user: 'carol' }),
      carrier: 'subprotocol',
      protocols: ['demo.v1'],
      WebSocket: good.WebSocket,
      backoff: once,
    });
    t.after(() => goodConn.close());
    const recGood = record(goodConn);
    await waitUntil(() => good.statuses.length >= 1, { what: 'upgrade' });
    assert.equal(good.statuses[0], 101);
    assert.equal(good.urls[0].search, '', 'no token in the query');

    // The same carrier with a tampered token is refused before the upgrade.
    const bad = spy();
    const badConn = connect({
      url: `${gate.ws}/ws/chat`,
      token: async () => `${await gate.token()}x`,
      carrier: 'subprotocol',
      protocols: ['demo.v1'],
      WebSocket: bad.WebSocket,
      backoff: once,
    });
    t.after(() => badConn.close());
    const recBad = record(badConn);
    const err = await waitUntil(() => recBad.named('error')[0]?.[0], { what: 'handshake error' });
    assert.equal(err.message, 'Unexpected server response: 401');
    assert.deepEqual(bad.statuses, []);
    // Opening also needs the upstream to select one of the app protocols:
    // browsers and ws fail a handshake whose answer selects none.
    await sleep(50);
    t.diagnostic(`good token: ${recGood.stateNames().join(' → ')}; ${recGood.named('error').map(([e]) => e.message).join('; ')}`);
  });

  test('bridge: /demo/ask publishes a token stream that /ws/ai/stream/{session} delivers', async (t) => {
    const conn = connect({ url: `${gate.ws}/ws/ai/stream/demo`, token: provider(gate), WebSocket });
    t.after(() => conn.close());
    const rec = record(conn);
    await nextEvent(conn, 'open');
    await sleep(100); // the subscription is made after the upgrade
    assert.equal(await gate.ask('demo', 'Revenue grew 12%'), 202);
    await waitUntil(() => stream(rec).some(([k]) => k === 'complete'), { what: 'complete' });
    assert.deepEqual(stream(rec), answerStream('Revenue grew 12%'));
  });

  test('forbidden: a client message on the AI stream closes 4003 and the client stops', async (t) => {
    const token = provider(gate);
    const conn = connect({ url: `${gate.ws}/ws/ai/stream/demo`, token, WebSocket, backoff: fast });
    t.after(() => conn.close());
    const rec = record(conn);
    await nextEvent(conn, 'open');
    conn.send('may I?');
    const closed = await nextEvent(conn, 'closed');
    await sleep(1500); // a wrongly scheduled retry would show up here
    assert.equal(closed.code, 4003);
    assert.equal(closed.reason, 'route does not accept client messages');
    assert.equal(closed.byClient, false);
    assert.deepEqual(rec.stateNames(), ['connecting', 'open', 'closed']);
    assert.equal(token.calls(), 1);
    assert.equal(conn.send('again'), false);
  });

  test('a session outside the sid claim is 403 before the upgrade; the client sees 1006 and keeps asking for tokens', async (t) => {
    const status = await new Promise((resolve, reject) => {
      gate.token().then((tok) => {
        const ws = new WebSocket(`${gate.ws}/ws/ai/stream/other?token=${tok}`);
        ws.on('unexpected-response', (_req, res) => {
          resolve(res.statusCode);
          ws.terminate();
        });
        ws.on('open', () => reject(new Error('upgraded')));
        ws.on('error', () => {});
      }, reject);
    });
    assert.equal(status, 403);

    const token = provider(gate);
    const conn = connect({ url: `${gate.ws}/ws/ai/stream/other`, token, WebSocket, backoff: { initial: 50, max: 100, factor: 2 } });
    t.after(() => conn.close());
    const rec = record(conn);
    await waitUntil(() => token.calls() >= 3, { what: '3 attempts' });
    const retries = rec.states().filter((s) => s.state === 'reconnecting');
    assert.ok(retries.length >= 2);
    for (const r of retries) assert.equal(r.code, 1006);
    assert.ok(!rec.stateNames().includes('open'));
  });

  test('expiry: a 3 s token closes 4001; the client gets a new token and reconnects at once', { timeout: 60_000 }, async (t) => {
    const token = provider(gate, { ttl: 3 });
    // A backoff this long shows that 4001 does not wait for it.
    const conn = connect({ url: `${gate.ws}/ws/chat`, token, WebSocket, backoff: { initial: 60_000, max: 60_000, factor: 2 } });
    t.after(() => conn.close());
    const rec = record(conn);
    await nextEvent(conn, 'open');
    const openedAt = Date.now();
    const rc = await nextEvent(conn, 'reconnecting');
    const expiredAfter = Date.now() - openedAt;
    await waitUntil(() => rec.stateNames().filter((s) => s === 'open').length === 2, { timeout: 5000, what: 'reopen' });
    const reopenedIn = Date.now() - openedAt - expiredAfter;

    assert.equal(rc.code, 4001);
    assert.equal(rc.reason, 'token expired');
    assert.equal(rc.delay, 0);
    // exp is in whole seconds, so a 3 s token lives between 2 and 3 s.
    assert.ok(expiredAfter >= 1500 && expiredAfter <= 4000, `closed ${expiredAfter} ms after open`);
    assert.ok(reopenedIn < 2000, `reopened ${reopenedIn} ms after 4001`);
    assert.equal(token.calls(), 2);
    assert.deepEqual(rec.stateNames(), ['connecting', 'open', 'reconnecting', 'connecting', 'open']);
    // The second hello can land a tick after the second open: wait for it.
    await waitUntil(() => rec.messages().filter((m) => m?.type === 'hello').length === 2, { timeout: 5000, what: 'second hello' });
  });
});

describe('wsgate restarts', { skip: needsWsgate }, () => {
  test('drain: SIGTERM closes chat and AI streams with 1001, exits 0, and both reconnect to the next process', { timeout: 60_000 }, async (t) => {
    const first = await startWsgate();
    let second;
    t.after(async () => {
      await first.stop('SIGKILL');
      await second?.stop('SIGKILL');
    });
    const chatToken = provider(first);
    const chat = connect({ url: `${first.ws}/ws/chat`, token: chatToken, WebSocket, backoff: fast });
    const ai = connect({ url: `${first.ws}/ws/ai/stream/demo`, token: provider(first), WebSocket, backoff: fast });
    t.after(() => {
      chat.close();
      ai.close();
    });
    const chatRec = record(chat);
    const aiRec = record(ai);
    await nextEvent(chat, 'type:hello');
    await waitUntil(() => ai.state === 'open', { what: 'AI stream open' });

    const chatClosed = nextEvent(chat, 'reconnecting');
    const aiClosed = nextEvent(ai, 'reconnecting');
    const stopped = first.stop('SIGTERM', 5_000); // shutdown_grace is 1s
    for (const rc of [await chatClosed, await aiClosed]) {
      assert.deepEqual([rc.code, rc.reason], [1001, 'server shutting down']);
      assert.ok(rc.delay < fast.initial, `delay ${rc.delay}`);
    }
    const { code, signal, killed } = await stopped;
    assert.deepEqual({ code, signal, killed }, { code: 0, signal: null, killed: false }, `SIGTERM exit; logs:\n${first.logs.join('')}`);

    await sleep(300); // a few refused attempts while nothing listens
    second = await startWsgate({ port: first.port });
    for (const rec of [chatRec, aiRec]) {
      await waitUntil(() => rec.stateNames().filter((s) => s === 'open').length === 2, { timeout: 15_000, what: 'reopen' });
    }
    const before = stream(chatRec).length;
    chat.send('back again');
    await waitUntil(() => stream(chatRec).slice(before).some(([k]) => k === 'complete'), { what: 'chat complete' });
    assert.deepEqual(stream(chatRec).slice(before), echoStream('back again'));
    assert.equal(chatRec.messages().filter((m) => m?.type === 'hello').length, 2);
    assert.equal(await second.ask('demo', 'still here'), 202);
    await waitUntil(() => stream(aiRec).some(([k]) => k === 'complete'), { what: 'AI complete' });
    assert.deepEqual(stream(aiRec), answerStream('still here'));

    const retries = chatRec.states().filter((s) => s.state === 'reconnecting');
    assert.equal(retries[0].code, 1001);
    for (const r of retries.slice(1)) assert.equal(r.code, 1006, 'refused while no process listened');
    assert.equal(chatToken.calls(), retries.length + 1, 'one token per attempt');
  });

  test('bounded queue: sends while wsgate is down keep the first queueLimit, in order', { timeout: 60_000 }, async (t) => {
    const port = await freePort();
    let gate;
    t.after(() => gate?.stop('SIGKILL'));
    const conn = connect({
      url: `ws://127.0.0.1:${port}/ws/chat`,
      token: () => gate.token(),
      WebSocket,
      queueLimit: 3,
      backoff: fast,
    });
    t.after(() => conn.close());
    const rec = record(conn);
    const sent = ['m1', 'm2', 'm3', 'm4', 'm5'].map((m) => conn.send(m));
    assert.deepEqual(sent, [true, true, true, false, false]);
    assert.deepEqual(
      rec.named('drop').map(([d]) => [d.data, d.reason]),
      [
        ['m4', 'queue_full'],
        ['m5', 'queue_full'],
      ],
    );
    gate = await startWsgate({ port });
    await waitUntil(() => stream(rec).filter(([k]) => k === 'complete').length === 3, { timeout: 15_000, what: '3 completes' });
    await sleep(300); // nothing more may arrive
    assert.deepEqual(stream(rec), [...echoStream('m1'), ...echoStream('m2'), ...echoStream('m3')]);
    assert.equal(conn.queued, 0);
  });
});
