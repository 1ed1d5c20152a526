// Tickets and first-message auth in headless Chromium: a page on another
// origin (listed in allowed_origins) fetches one-time tickets from a real
// `wsgate demo` with fetch + CORS and streams over ?ticket= sockets; no URL
// the browser requests, and nothing wsgate logs, ever holds the JWT; a
// spent ticket is refused; a first-message socket opens once wsgate
// acknowledges the token.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { freePort, needsWsgate, startWsgate } from './helpers.mjs';

const chromiumPath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const skip = needsWsgate || (existsSync(chromiumPath) ? false : `${chromiumPath} is missing (scripts/test-js.sh installs it)`);
const chromiumArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const clientSource = readFileSync(new URL('../src/index.js', import.meta.url));

// The page's own origin: it serves the page and the client module; wsgate
// is another origin.
async function startSite() {
  const port = await freePort();
  const server = createServer((req, res) => {
    if (req.url === '/client.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      res.end(clientSource);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<!doctype html><title>app</title><ul id="out"></ul>');
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(resolve)) };
}

describe('tickets and first-message auth in Chromium', { skip, timeout: 120_000 }, () => {
  let browser;
  let gate;
  let site;
  before(async () => {
    site = await startSite();
    gate = await startWsgate({ env: { WSGATE_ALLOWED_ORIGINS: site.origin } });
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  });
  after(async () => {
    await browser?.close();
    await gate?.stop('SIGKILL');
    await site?.close();
  });

  test('a page on an allowed origin streams over tickets; no JWT in any URL or log', async () => {
    const token = await gate.token({ ttl: 300 });
    const page = await browser.newPage();
    const urls = [];
    page.on('request', (req) => urls.push(req.url()));
    page.on('websocket', (ws) => urls.push(ws.url()));
    const pageErrors = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(`${site.origin}/`);

    // Two panels: the passthrough chat and the AI stream, both on tickets.
    await page.evaluate(
      async ({ token, wsgate }) => {
        const { connect } = await import('/client.js');
        window.got = { chat: [], ai: [], states: [] };
        const open = (name, path) => {
          const conn = connect({ url: `${wsgate.replace('http', 'ws')}${path}`, token: () => token, ticket: `${wsgate}/auth/ticket` });
          conn.on('state', (ev) => window.got.states.push(`${name}:${ev.state}`));
          conn.on('message', (_data, { json }) => window.got[name].push(json));
          return conn;
        };
        window.chat = open('chat', '/ws/chat');
        window.ai = open('ai', '/ws/ai/stream/demo');
      },
      { token, wsgate: gate.http },
    );
    await page.waitForFunction(() => ['chat:open', 'ai:open'].every((s) => window.got.states.includes(s)), null, { timeout: 20_000 });
    await page.waitForFunction(() => window.got.chat.length >= 1, null, { timeout: 10_000 });
    assert.deepEqual(await page.evaluate(() => window.got.chat[0]), { type: 'hello', data: { user: 'alice', tenant: 'demo' } });

    assert.equal(await gate.ask('demo', 'revenue by region'), 202);
    await page.waitForFunction(() => window.got.ai.some((m) => m?.type === 'complete'), null, { timeout: 20_000 });
    const words = await page.evaluate(() => window.got.ai.filter((m) => m?.type === 'token').map((m) => m.data.token));
    assert.deepEqual(words, ['answer:', 'revenue', 'by', 'region']);

    // A ticket works once: the browser's second socket with it is refused
    // before the upgrade (a browser sees 1006).
    const replay = await page.evaluate(async ({ token, wsgate }) => {
      const res = await fetch(`${wsgate}/auth/ticket`, { method: 'POST', credentials: 'include', headers: { Authorization: `Bearer ${token}` } });
      const { ticket, expires_in: expiresIn } = await res.json();
      const once = (t) =>
        new Promise((resolve) => {
          const ws = new WebSocket(`${wsgate.replace('http', 'ws')}/ws/chat?ticket=${t}`);
          ws.onopen = () => {
            ws.close(1000);
            resolve('open');
          };
          ws.onclose = (ev) => resolve(`closed ${ev.code}`);
        });
      return { status: res.status, expiresIn, first: await once(ticket), second: await once(ticket) };
    }, { token, wsgate: gate.http });
    // Reading the answer at all proves CORS let this origin in (with credentials).
    assert.deepEqual(replay, { status: 200, expiresIn: 30, first: 'open', second: 'closed 1006' });

    await page.evaluate(() => {
      window.chat.close();
      window.ai.close();
    });
    assert.deepEqual(pageErrors, []);
    assert.ok(urls.some((u) => u.includes('ticket=')), `the sockets used tickets:\n${urls.join('\n')}`);
    const leaked = urls.filter((u) => u.includes(token) || u.includes('eyJ'));
    assert.deepEqual(leaked, [], 'no URL the browser requested holds the JWT');
    // wsgate's log lines (JSON; the demo's banner on stdout prints its own dev token on purpose).
    const logs = gate.logs.join('').split('\n').filter((l) => l.startsWith('{')).join('\n');
    assert.ok(logs.includes('connection_opened'), logs);
    assert.ok(!logs.includes('eyJ') && !logs.includes('ticket'.concat('=')), `wsgate logged a token or a ticket URL:\n${logs}`);
    assert.ok(!gate.logs.join('').includes(token), 'the page\'s token is nowhere in wsgate\'s output');
    await page.close();
  });

  test('a page on a foreign origin gets no ticket', async () => {
    const token = await gate.token({ ttl: 300 });
    const foreign = await startSite(); // an origin not in allowed_origins
    const page = await browser.newPage();
    await page.goto(`${foreign.origin}/`);
    const result = await page.evaluate(async ({ token, wsgate }) => {
      try {
        await fetch(`${wsgate}/auth/ticket`, { method: 'POST', credentials: 'include', headers: { Authorization: `Bearer ${token}` } });
        return 'read a ticket';
      } catch (err) {
        return err.name; // CORS: the browser hides the 403
      }
    }, { token, wsgate: gate.http });
    assert.equal(result, 'TypeError');
    await page.close();
    await foreign.close();
  });

  test('first-message auth: open after the acknowledgement, then relays', async () => {
    const token = await gate.token({ ttl: 300 });
    const page = await browser.newPage();
    const urls = [];
    page.on('websocket', (ws) => urls.push(ws.url()));
    await page.goto(`${site.origin}/`);
    const got = await page.evaluate(
      async ({ token, wsgate }) => {
        const { connect } = await import('/client.js');
        const conn = connect({ url: `${wsgate.replace('http', 'ws')}/ws/assistant`, token: () => token, auth: 'first-message' });
        const messages = [];
        conn.on('message', (_d, { json }) => messages.push(json));
        conn.send('queued before open');
        const open = await new Promise((resolve) => conn.once('open', resolve));
        await new Promise((resolve) => {
          const check = () => (messages.some((m) => m?.type === 'complete') ? resolve() : setTimeout(check, 20));
          check();
        });
        conn.close();
        return { open, first: messages[0], words: messages.filter((m) => m?.type === 'token').map((m) => m.data.token) };
      },
      { token, wsgate: gate.http },
    );
    assert.equal(got.open.user, 'alice');
    assert.equal(got.open.tenant, 'demo');
    assert.deepEqual(got.first, { type: 'hello', data: { user: 'alice', tenant: 'demo' } });
    assert.deepEqual(got.words, ['echo:', 'queued', 'before', 'open']);
    assert.deepEqual(urls, [`${gate.ws}/ws/assistant`], 'the socket URL carries no token');
    await page.close();
  });
});
