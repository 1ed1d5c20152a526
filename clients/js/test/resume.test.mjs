// Resume against a real `wsgate demo` (WSGATE_BIN) on its durable route
// /ws/ai/durable/{session}: a socket that drops mid-stream reconnects by
// itself with since=<last pos> and the app sees every token exactly once, in
// order; after a wsgate restart (new epoch, history gone) the client says so
// with recovery {recovered:false, reason:'epoch_changed'} and refetch, and the
// live stream goes on.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';

import { connect } from '../src/index.js';
import { needsWsgate, nextEvent, record, sleep, startRelay, startWsgate, waitUntil } from './helpers.mjs';

// Every reconnect is a handshake from 127.0.0.1; the default per-IP rate
// limit (20/s) must not turn a fast retry into a 429.
const env = { WSGATE_LIMITS_HANDSHAKES_PER_SECOND_PER_IP: '-1' };
const fast = { initial: 50, max: 200, factor: 2 };

/** The demo AI service answers /demo/ask with `answer: <prompt>`, one token per word, then complete. */
function answerStream(prompt) {
  const words = `answer: ${prompt}`.split(' ');
  return [...words.map((w, i) => [i, w]), ['complete', words.length]];
}

/** stream lists the token and complete payloads the app saw, from message index from on. */
function stream(rec, from = 0) {
  return rec
    .messages()
    .slice(from)
    .filter((m) => m?.type === 'token' || m?.type === 'complete')
    .map((m) => (m.type === 'token' ? [m.data.index, m.data.token] : ['complete', m.data.tokens]));
}

const completes = (rec, from = 0) => stream(rec, from).filter(([k]) => k === 'complete').length;

/** positions lists the resume positions of the app's messages, from message index from on. */
function positions(rec, from = 0) {
  return rec
    .named('message')
    .slice(from)
    .map(([, info]) => info.position);
}

const POS = /^([^:]+):(\d+)-(\d+)$/;

/**
 * spy is a ws WebSocket class that keeps, per socket, the URL it dialled and
 * every text frame as it came off the wire (before the client unwraps it).
 */
function spy() {
  const sockets = [];
  class SpyWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const s = { url: new URL(url), frames: [] };
      sockets.push(s);
      this.on('message', (data, isBinary) => {
        if (!isBinary) s.frames.push(JSON.parse(Buffer.from(data).toString()));
      });
    }
  }
  return { WebSocket: SpyWebSocket, sockets };
}

/** uniqueSession is a session id no other test (or earlier run) published to. */
const uniqueSession = (name) => `${name}-${randomBytes(4).toString('hex')}`;

/**
 * durable connects with resume: true to the durable route for session on
 * base (ws://host:port), minting a token for that session before every
 * attempt, and records, for every attempt, the position the client held
 * when it dialled.
 */
function durable(gate, base, session, WebSocketImpl) {
  const conn = connect({
    url: `${base}/ws/ai/durable/${session}`,
    token: () => gate().token({ session }),
    WebSocket: WebSocketImpl,
    resume: true,
    backoff: fast,
  });
  const heldAtDial = [];
  conn.on('connecting', () => heldAtDial.push(conn.position ?? null));
  return { conn, heldAtDial };
}

/**
 * warmUp asks for a short answer and waits for its complete: after it the
 * subscription is live (a message arrived through it) and the client holds a
 * position. Returns the message count after the warm-up.
 */
async function warmUp(gate, session, rec) {
  assert.equal(await gate.ask(session, 'warm up'), 202);
  await waitUntil(() => completes(rec) >= 1, { what: 'warm-up complete' });
  await sleep(100); // nothing else is in flight
  assert.deepEqual(stream(rec), answerStream('warm up'));
  return rec.messages().length;
}

describe('resume on the durable route', { skip: needsWsgate, timeout: 120_000 }, () => {
  let gate;
  let relay;
  before(async () => {
    gate = await startWsgate({ env });
    relay = await startRelay(gate.port);
  });
  after(async () => {
    await relay?.close();
    await gate?.stop('SIGKILL');
  });

  test('a socket dropped mid-stream reconnects with since= and the app gets every token once, in order', async (t) => {
    const session = uniqueSession('drop');
    const wire = spy();
    const { conn, heldAtDial } = durable(() => gate, `ws://127.0.0.1:${relay.port}`, session, wire.WebSocket);
    t.after(() => conn.close());
    const rec = record(conn);
    await nextEvent(conn, 'open');
    const mark = await warmUp(gate, session, rec);

    // 60 words: the answer is 61 tokens over ~2.4 s. After the 10th token
    // the link dies and stays dead for 500 ms (~12 tokens published
    // meanwhile), so the resumed socket must replay them.
    const prompt = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
    const want = answerStream(prompt);
    let cutAt; // {index, position, sockets} when the link died
    const offToken = conn.on('type:token', (data) => {
      if (cutAt || data.index !== 9 || completes(rec, mark) > 0) return;
      cutAt = { index: data.index, position: conn.position, sockets: relay.cut() };
      relay.down(true);
      setTimeout(() => relay.down(false), 500);
    });
    assert.equal(await gate.ask(session, prompt), 202);
    await waitUntil(() => completes(rec, mark) >= 1, { timeout: 20_000, what: 'complete after the drop' });
    offToken();
    await sleep(200); // a duplicate after complete would show up here

    // Every token index 0..60 exactly once, in order, then complete.
    assert.deepEqual(stream(rec, mark), want);
    assert.ok(cutAt, 'the link was cut');
    assert.equal(cutAt.sockets, 1, 'one relayed connection was cut');

    // The client noticed a network failure (1006), not a close it asked for,
    // and reconnected by itself.
    const states = rec.states();
    const firstDrop = states.find((s) => s.state === 'reconnecting');
    assert.equal(firstDrop?.code, 1006);
    assert.equal(conn.state, 'open');
    assert.equal(states.filter((s) => s.state === 'open').length, 2, `states: ${rec.stateNames().join(' → ')}`);
    assert.ok(!rec.stateNames().includes('closed'));

    // Every dial after the first carried since=<the position the client
    // held>; the first had none. The reconnect that opened resumed from at
    // least the position at the cut.
    assert.equal(wire.sockets.length, heldAtDial.length);
    assert.equal(heldAtDial[0], null);
    assert.equal(wire.sockets[0].url.searchParams.has('since'), false);
    for (const [i, s] of wire.sockets.entries()) {
      assert.equal(s.url.searchParams.get('since'), heldAtDial[i], `dial ${i}`);
    }
    const resumed = wire.sockets.at(-1);
    const resumedFrom = resumed.url.searchParams.get('since');
    assert.match(resumedFrom, POS);
    assert.ok(positions(rec).includes(resumedFrom), 'since= is a position the client received');

    // The resumed socket starts with recovery {recovered: true, replayed: N},
    // and the N replayed envelopes are exactly the tokens after since=.
    const [control, ...envelopes] = resumed.frames;
    assert.equal(control.type, 'wsgate.recovery');
    assert.equal(control.recovered, true);
    assert.ok(Number.isInteger(control.replayed) && control.replayed >= 3, `replayed ${control.replayed}`);
    assert.ok(envelopes.every((e) => e.type === 'wsgate.message' && POS.test(e.pos)));
    const lastBefore = rec
      .named('message')
      .find(([, info]) => info.position === resumedFrom)[1].json.data.index;
    assert.deepEqual(
      envelopes.slice(0, control.replayed).map((e) => e.data.data.index),
      Array.from({ length: control.replayed }, (_, i) => lastBefore + 1 + i),
    );

    assert.deepEqual(rec.named('recovery'), [[{ recovered: true, reason: undefined, replayed: control.replayed }]]);
    assert.deepEqual(rec.named('refetch'), []);

    // Positions: one epoch, all distinct, in the order they arrived.
    const pos = positions(rec, mark);
    assert.equal(new Set(pos).size, pos.length, 'no position twice');
    const epochs = new Set(pos.map((p) => POS.exec(p)[1]));
    assert.equal(epochs.size, 1);
    const keys = pos.map((p) => POS.exec(p).slice(2).map(Number));
    for (let i = 1; i < keys.length; i++) {
      const [a, b] = [keys[i - 1], keys[i]];
      assert.ok(b[0] > a[0] || (b[0] === a[0] && b[1] > a[1]), `position ${pos[i]} after ${pos[i - 1]}`);
    }
    t.diagnostic(
      `cut after index ${cutAt.index}; ${wire.sockets.length - 1} reconnect attempts; resumed from index ${lastBefore}, replayed ${control.replayed}`,
    );
  });

  test('cut after every 5th token, reconnecting at once: no gap and no duplicate at any seam', async (t) => {
    // Reconnects land at random points between publishes (every 40 ms), some
    // while a replay is still being written: each one is a seam where a
    // message can arrive both from history and live.
    const session = uniqueSession('seams');
    const wire = spy();
    const { conn } = durable(() => gate, `ws://127.0.0.1:${relay.port}`, session, wire.WebSocket);
    t.after(() => conn.close());
    const rec = record(conn);
    await nextEvent(conn, 'open');
    const mark = await warmUp(gate, session, rec);

    const prompt = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
    const cutOn = new Map(); // token index -> relayed connections cut
    const offToken = conn.on('type:token', (data) => {
      if (data.index % 5 !== 4 || cutOn.has(data.index)) return;
      cutOn.set(data.index, relay.cut());
    });
    assert.equal(await gate.ask(session, prompt), 202);
    await waitUntil(() => completes(rec, mark) >= 1, { timeout: 30_000, what: 'complete' });
    offToken();
    await sleep(200);

    assert.deepEqual(stream(rec, mark), answerStream(prompt));
    assert.deepEqual([...cutOn], [4, 9, 14, 19, 24, 29, 34, 39, 44, 49, 54, 59].map((i) => [i, 1]));
    const recoveries = rec.named('recovery').map(([{ replayed, ...r }]) => (Number.isInteger(replayed) ? r : { replayed }));
    assert.deepEqual(recoveries, Array(cutOn.size).fill({ recovered: true, reason: undefined }));
    assert.deepEqual(rec.named('refetch'), []);
    const pos = positions(rec, mark);
    assert.equal(new Set(pos).size, pos.length, 'no position twice');
    const replayed = wire.sockets.map((s) => s.frames[0]).filter((f) => f?.type === 'wsgate.recovery').map((f) => f.replayed);
    t.diagnostic(`${wire.sockets.length - 1} reconnects; replayed per resume: ${replayed.join(',')}`);
  });
});

describe('resume across a wsgate restart', { skip: needsWsgate, timeout: 120_000 }, () => {
  test('a new process is a new epoch: recovery epoch_changed, refetch, and the live stream goes on', async (t) => {
    const first = await startWsgate({ env });
    let second;
    t.after(async () => {
      await first.stop('SIGKILL');
      await second?.stop('SIGKILL');
    });
    const session = uniqueSession('epoch');
    const wire = spy();
    const { conn, heldAtDial } = durable(() => second ?? first, first.ws, session, wire.WebSocket);
    t.after(() => conn.close());
    const rec = record(conn);
    await nextEvent(conn, 'open');
    await warmUp(first, session, rec);
    const held = conn.position;
    assert.match(held, POS);
    const oldEpoch = POS.exec(held)[1];

    // The history lives in the process: SIGTERM drains (1001), the client
    // retries while nothing listens, and finds a process with a new epoch.
    const stopped = await first.stop('SIGTERM', 5_000);
    assert.equal(stopped.code, 0, `SIGTERM exit; logs:\n${first.logs.join('')}`);
    await sleep(300); // a few refused attempts while nothing listens
    second = await startWsgate({ port: first.port, env });
    const recovery = await waitUntil(() => rec.named('recovery')[0]?.[0], { timeout: 20_000, what: 'recovery' });
    assert.deepEqual(recovery, { recovered: false, reason: 'epoch_changed' });
    assert.deepEqual(rec.named('refetch'), [[{ source: 'recovery', reason: 'epoch_changed' }]]);
    assert.equal(rec.states().find((s) => s.state === 'reconnecting')?.code, 1001);

    // The socket that opened on the new process asked for since=<held> and
    // got the control message first.
    const resumed = wire.sockets.at(-1);
    assert.equal(resumed.url.searchParams.get('since'), held);
    assert.deepEqual(resumed.frames[0], { type: 'wsgate.recovery', recovered: false, reason: 'epoch_changed' });
    for (const [i, s] of wire.sockets.entries()) {
      assert.equal(s.url.searchParams.get('since'), heldAtDial[i], `dial ${i}`);
    }

    // Live messages still flow, from the new epoch.
    const mark = rec.messages().length;
    const prompt = 'after the restart the stream goes on';
    assert.equal(await second.ask(session, prompt), 202);
    await waitUntil(() => completes(rec, mark) >= 1, { timeout: 20_000, what: 'complete after the restart' });
    await sleep(200);
    assert.deepEqual(stream(rec, mark), answerStream(prompt));
    const newEpochs = new Set(positions(rec, mark).map((p) => POS.exec(p)[1]));
    assert.equal(newEpochs.size, 1);
    assert.notEqual([...newEpochs][0], oldEpoch, 'a new process is a new epoch');
    assert.equal(POS.exec(conn.position)[1], [...newEpochs][0]);
    assert.equal(rec.named('recovery').length, 1);
    assert.equal(rec.named('refetch').length, 1);
  });
});
