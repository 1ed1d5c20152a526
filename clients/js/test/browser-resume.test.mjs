// Resume in headless Chromium: the client module wsgate serves
// (/wsgate-client.js), on the browser's own WebSocket, reading the durable
// route through a TCP relay that the test cuts mid-stream. The page must
// reconnect by itself with since= and show every token exactly once.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { needsWsgate, startRelay, startWsgate } from './helpers.mjs';

const chromiumPath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const skip = needsWsgate || (existsSync(chromiumPath) ? false : `${chromiumPath} is missing (scripts/test-js.sh installs it)`);

// As in browser.test.mjs.
const chromiumArgs = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function answerStream(prompt) {
  const words = `answer: ${prompt}`.split(' ');
  return [...words.map((w, i) => [i, w]), ['complete', words.length]];
}

describe('resume in Chromium', { skip, timeout: 120_000 }, () => {
  let browser;
  let gate;
  let relay;
  before(async () => {
    gate = await startWsgate({ env: { WSGATE_LIMITS_HANDSHAKES_PER_SECOND_PER_IP: '-1' } });
    relay = await startRelay(gate.port);
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  });
  after(async () => {
    await browser?.close();
    await relay?.close();
    await gate?.stop('SIGKILL');
  });

  test('the page client reconnects after a cut link with since= and shows every token once', async (t) => {
    const session = `browser-${randomBytes(4).toString('hex')}`;
    const page = await browser.newPage();
    t.after(() => page.close());
    const pageErrors = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    let cuts = 0;
    await page.exposeFunction('cutLink', () => {
      cuts += relay.cut();
      relay.down(true);
      setTimeout(() => relay.down(false), 500);
    });

    // Everything, the module, tokens and the socket, goes through the relay:
    // one origin, and a cut link fails all of it, as a real one would.
    const origin = `http://127.0.0.1:${relay.port}`;
    assert.equal((await page.goto(`${origin}/wsgate-client.js`)).status(), 200);
    await page.evaluate(async (session) => {
      const { connect } = await import('/wsgate-client.js');
      const rec = { states: [], messages: [], recovery: [], refetch: [], dials: [], cut: false };
      window.rec = rec;
      class Dialled extends WebSocket {
        constructor(url, protocols) {
          super(url, protocols);
          // The position the client held when it dialled, and the since= it sent.
          rec.dials.push({ since: new URL(url).searchParams.get('since'), held: window.conn.position ?? null });
        }
      }
      const conn = connect({
        url: `/ws/ai/durable/${session}`,
        token: () =>
          fetch(`/demo/token?session=${session}`, { cache: 'no-store' })
            .then((r) => r.json())
            .then((b) => b.token),
        resume: true,
        backoff: { initial: 50, max: 200, factor: 2 },
        WebSocket: Dialled,
      });
      window.conn = conn;
      conn.on('state', (ev) => rec.states.push({ state: ev.state, code: ev.code }));
      conn.on('message', (_data, { json, position }) => rec.messages.push({ json, position }));
      conn.on('recovery', (ev) => rec.recovery.push(ev));
      conn.on('refetch', (ev) => rec.refetch.push(ev));
    }, session);
    await page.waitForFunction(() => window.conn.state === 'open', null, { timeout: 20_000 });

    // Warm up until a whole answer arrived: the subscription is live and the
    // client holds a position.
    assert.equal(await gate.ask(session, 'warm up'), 202);
    await page.waitForFunction(() => window.rec.messages.some((m) => m.json?.type === 'complete'), null, { timeout: 20_000 });
    const mark = await page.evaluate(() => window.rec.messages.length);

    // Cut the link once the page has seen token 9 of the real answer.
    await page.evaluate(() => {
      window.conn.on('type:token', (data) => {
        if (data.index === 9 && !window.rec.cut) {
          window.rec.cut = true;
          window.cutLink();
        }
      });
    });
    const prompt = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
    assert.equal(await gate.ask(session, prompt), 202);
    await page.waitForFunction((m) => window.rec.messages.slice(m).some((x) => x.json?.type === 'complete'), mark, {
      timeout: 20_000,
    });
    await page.waitForTimeout(200);
    const rec = await page.evaluate(() => window.rec);

    const got = rec.messages
      .slice(mark)
      .map(({ json: m }) => (m.type === 'token' ? [m.data.index, m.data.token] : [m.type, m.data.tokens]));
    assert.deepEqual(got, answerStream(prompt));
    assert.ok(cuts >= 1, 'the socket was cut'); // with Chromium's idle keep-alive connection, if any
    assert.equal(rec.states.find((s) => s.state === 'reconnecting')?.code, 1006);
    assert.equal(rec.states.filter((s) => s.state === 'open').length, 2, JSON.stringify(rec.states));
    assert.equal(rec.recovery.length, 1);
    const { replayed, ...recovery } = rec.recovery[0];
    assert.deepEqual(recovery, { recovered: true, reason: undefined });
    assert.ok(Number.isInteger(replayed) && replayed >= 1, `replayed ${replayed}`);
    assert.deepEqual(rec.refetch, []);

    // Every dial carried since=<the position held when it started>.
    assert.ok(rec.dials.length >= 2, `${rec.dials.length} dials`);
    assert.equal(rec.dials[0].since, null);
    for (const [i, d] of rec.dials.entries()) assert.equal(d.since, d.held, `dial ${i}`);
    assert.ok(rec.dials.slice(1).every((d) => typeof d.since === 'string' && d.since !== ''));
    assert.ok(rec.messages.some((m) => m.position === rec.dials.at(-1).since), 'the resume position is one the page received');
    const positions = rec.messages.map((m) => m.position);
    assert.equal(new Set(positions).size, positions.length, 'no position twice');
    assert.deepEqual(pageErrors, []);
    t.diagnostic(`${rec.dials.length - 1} reconnect attempts (${rec.states.filter((s) => s.state === 'connecting').length - rec.dials.length} failed at the token fetch)`);
  });
});
