// The client's ticket option and first-message mode against a real
// `wsgate demo` process (WSGATE_BIN): a fresh ticket before every connect
// and reconnect, a spent ticket never reused, the JWT never in a socket URL,
// and a first-message socket that reconnects with a new token after 4401.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';

import { connect } from '../src/index.js';
import { nextEvent, record, needsWsgate, startWsgate, waitUntil } from './helpers.mjs';

const fast = { initial: 100, max: 500, factor: 2 };

/** hellos waits until rec holds n hello frames from the demo upstream and returns the last one's data.
 * (Listening for the next event instead would race: the hello can arrive in the same tick as `open`,
 * or before the test's restarted wsgate has answered /readyz.) */
async function hellos(rec, n, timeout = 20_000) {
  const all = () => rec.messages().filter((m) => m?.type === 'hello');
  await waitUntil(() => all().length >= n, { timeout, what: `${n} hello frame(s)` });
  return all()[n - 1].data;
}

/** SpyWebSocket records every URL the client opens. */
function spy(urls) {
  return class extends WebSocket {
    constructor(url, protocols) {
      urls.push(String(url));
      super(url, protocols);
    }
  };
}

describe('tickets and first-message auth against wsgate demo', { skip: needsWsgate }, () => {
  let gate;
  before(async () => {
    gate = await startWsgate();
  });
  after(() => gate?.stop('SIGKILL'));

  test('ticket: the ticket endpoint is asked before every connect and reconnect', async (t) => {
    const urls = [];
    let tokens = 0;
    const token = async () => {
      tokens++;
      return gate.token({ user: 'alice', tenant: 'demo' });
    };
    const conn = connect({ url: `${gate.ws}/ws/chat`, token, ticket: `${gate.http}/auth/ticket`, backoff: fast, WebSocket: spy(urls) });
    t.after(() => conn.close());
    const rec = record(conn);
    assert.deepEqual(await hellos(rec, 1), { user: 'alice', tenant: 'demo' });

    // Drop the socket from wsgate's side: the client reconnects with a new ticket.
    const restart = await gate.stop('SIGTERM', 5_000);
    assert.equal(restart.code, 0);
    gate = await startWsgate({ port: gate.port, adminPort: gate.adminPort });
    assert.deepEqual(await hellos(rec, 2), { user: 'alice', tenant: 'demo' });

    const tickets = urls.map((u) => new URL(u).searchParams.get('ticket'));
    assert.ok(urls.length >= 2, urls.join('\n'));
    assert.ok(tickets.every((x) => typeof x === 'string' && x.length === 43), urls.join('\n'));
    assert.equal(new Set(tickets).size, tickets.length, 'every attempt used a fresh ticket');
    assert.ok(urls.every((u) => !u.includes('token=') && !u.includes('eyJ')), urls.join('\n'));
    assert.ok(tokens >= 2, 'the token provider was asked for every ticket');
  });

  test('ticket as a function; a refused ticket request is a retry, not a stop', async (t) => {
    let calls = 0;
    const ticket = async () => {
      calls++;
      if (calls === 1) return 'not-a-real-ticket'; // wsgate answers 401 before the upgrade
      const res = await fetch(`${gate.http}/auth/ticket`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${await gate.token({ user: 'bob', tenant: 'demo' })}` },
      });
      return (await res.json()).ticket;
    };
    const conn = connect({ url: `${gate.ws}/ws/chat`, ticket, backoff: fast, WebSocket });
    t.after(() => conn.close());
    const rec = record(conn);
    assert.deepEqual(await hellos(rec, 1), { user: 'bob', tenant: 'demo' });
    assert.deepEqual(rec.stateNames().slice(0, 4), ['connecting', 'reconnecting', 'connecting', 'open']);
    assert.equal(calls, 2);
  });

  test('first-message: open after the acknowledgement; 4401 brings a new token', async (t) => {
    const urls = [];
    let calls = 0;
    const token = async () => (++calls === 1 ? 'not.a.jwt' : gate.token({ user: 'carol', tenant: 'demo' }));
    const conn = connect({ url: `${gate.ws}/ws/assistant`, token, auth: 'first-message', backoff: fast, WebSocket: spy(urls) });
    t.after(() => conn.close());
    const rec = record(conn);
    const open = await nextEvent(conn, 'open', { timeout: 10_000 });
    assert.equal(open.user, 'carol');
    assert.equal(open.tenant, 'demo');
    const states = rec.states();
    const refused = states.find((s) => s.state === 'reconnecting');
    assert.equal(refused.code, 4401);
    assert.match(refused.reason, /^auth failed: malformed token/);
    assert.deepEqual(await hellos(rec, 1), { user: 'carol', tenant: 'demo' });
    conn.send('hi there');
    await waitUntil(() => rec.messages().some((m) => m?.type === 'complete'), { what: 'complete' });
    assert.ok(urls.every((u) => u === `${gate.ws}/ws/assistant`), urls.join('\n'));
    assert.ok(!rec.messages().some((m) => m?.type === 'wsgate.auth'), 'the acknowledgement is not an app message');
  });

  test('options are checked', () => {
    assert.throws(() => connect({ url: 'ws://x/', WebSocket }), /token or ticket is required/);
    assert.throws(() => connect({ url: 'ws://x/', token: 't', auth: 'later', WebSocket }), /auth must be/);
    assert.throws(() => connect({ url: 'ws://x/', ticket: '/auth/ticket', auth: 'first-message', WebSocket }), /pass token, not ticket/);
    assert.throws(() => connect({ url: 'ws://x/', token: 't', ticket: 42, WebSocket }), /ticket must be/);
  });
});
