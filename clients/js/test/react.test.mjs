// useWsgate in headless Chromium with React 19, bundled by esbuild: a page
// on its own origin talks to `wsgate serve` (through a TCP relay the test
// cuts mid-stream), whose chat route has the example FastAPI service as its
// upstream and whose durable route carries the answer the service publishes
// through the Python Publisher. The page must show the verified identity and
// every token of the answer exactly once, in order, across the cut.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

import { freePort, needsWsgate, startRelay, waitUntil } from './helpers.mjs';
import { python, startStack } from './stack.mjs';

const chromiumPath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const skip =
  needsWsgate ||
  (existsSync(chromiumPath) ? false : `${chromiumPath} is missing (scripts/test-js.sh installs it)`) ||
  (existsSync(python) ? false : `${python} is missing (scripts/test-js.sh installs it)`);

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

const SQL = 'SELECT region, sum(revenue) FROM sales GROUP BY region';
const CHART = { type: 'bar', x: 'region', y: 'revenue' };

async function bundle() {
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [fileURLToPath(new URL('./react-page/app.jsx', import.meta.url))],
    alias: { '@wsgate/client/react': fileURLToPath(new URL('../src/react.js', import.meta.url)) },
    bundle: true,
    format: 'esm',
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"' },
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0].contents;
}

async function servePage(port, js) {
  const html = '<!doctype html><meta charset="utf-8"><title>wsgate react</title><div id="root"></div>' +
    '<script type="module" src="/app.js"></script>';
  const server = http.createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/') res.writeHead(200, { 'content-type': 'text/html' }).end(html);
    else if (path === '/app.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    else res.writeHead(404).end();
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return server;
}

describe('useWsgate in Chromium against wsgate and the FastAPI example', { skip, timeout: 180_000 }, () => {
  let browser;
  let stack;
  let relay;
  let pageServer;
  let origin;
  before(async () => {
    const js = await bundle();
    const pagePort = await freePort();
    origin = `http://127.0.0.1:${pagePort}`;
    pageServer = await servePage(pagePort, js);
    stack = await startStack({ allowedOrigins: [origin] });
    relay = await startRelay(stack.port);
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  });
  after(async () => {
    await browser?.close();
    await relay?.close();
    await stack?.stop();
    pageServer?.closeAllConnections();
    await new Promise((resolve) => (pageServer ? pageServer.close(resolve) : resolve()));
  });

  test('streams an answer from the FastAPI service, resumes across a cut link, shows each token once', async (t) => {
    const session = `react-${randomBytes(4).toString('hex')}`;
    const page = await browser.newPage();
    t.after(() => page.close());
    const pageErrors = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.exposeFunction('getToken', (sid) => stack.mint({ sid: sid || undefined }));

    const res = await page.goto(`${origin}/?gate=ws://127.0.0.1:${relay.port}&session=${session}`);
    assert.equal(res.status(), 200);
    await page.waitForFunction(
      () => document.querySelector('#chat-state')?.textContent === 'open' &&
        document.querySelector('#stream-state')?.textContent === 'open',
      null, { timeout: 15_000 },
    );
    // The upstream saw the identity wsgate verified from the token.
    await page.waitForFunction(() => document.querySelector('#hello').textContent !== '', null, { timeout: 10_000 });
    assert.equal(await page.textContent('#hello'), 'alice@acme');

    const prompt = Array.from({ length: 30 }, (_, i) => `q${i}`).join(' ');
    const words = `answer: ${prompt}`.split(' ');
    await page.evaluate((p) => window.ask(p), prompt);
    const shown = async () => {
      const s = await page.textContent('#indexes');
      return s === '' ? 0 : s.split(',').length;
    };
    await waitUntil(async () => (await shown()) >= 5, { timeout: 15_000, what: 'the first tokens' });
    const cut = relay.cut();
    const beforeCut = await shown();
    relay.down(true);
    setTimeout(() => relay.down(false), 400);
    assert.ok(cut >= 2, `expected the chat and stream sockets on the relay, found ${cut}`);
    assert.ok(beforeCut < words.length, 'the cut must land mid-stream');

    await page.waitForFunction(() => document.querySelector('#complete').textContent !== '', null, {
      timeout: 30_000,
    });
    assert.equal(await page.textContent('#indexes'), words.map((_, i) => i).join(','));
    assert.equal(await page.textContent('#answer'), words.join(' '));
    assert.deepEqual(JSON.parse(await page.textContent('#complete')), { tokens: words.length, sql: SQL, chartConfig: CHART });
    const recoveries = await page.evaluate(() => window.recoveries);
    assert.equal(recoveries.length, 1, JSON.stringify(recoveries));
    assert.equal(recoveries[0].recovered, true);
    assert.ok(recoveries[0].replayed > 0, `expected missed tokens to be replayed, got ${JSON.stringify(recoveries)}`);
    // The chat socket came back by itself too.
    await page.waitForFunction(() => document.querySelector('#chat-state').textContent === 'open', null, {
      timeout: 15_000,
    });
    assert.equal(await page.textContent('#accepted'), '1');
    assert.deepEqual(pageErrors, []);
  });

  test('a new url replaces the connection and a null url closes it: no socket or subscription is left behind', async (t) => {
    const [a, b] = ['switch-a', 'switch-b'].map((s) => `${s}-${randomBytes(3).toString('hex')}`);
    const page = await browser.newPage();
    t.after(() => page.close());
    await page.exposeFunction('getToken', (sid) => stack.mint({ sid: sid || undefined }));
    await page.goto(`${origin}/?gate=ws://127.0.0.1:${stack.port}&session=${a}`);
    const streamState = (want) =>
      page.waitForFunction((w) => document.querySelector('#stream-state')?.textContent === w, want, { timeout: 15_000 });
    const subscribers = async (session) =>
      Number((await stack.redis('pubsub', 'numsub', `ai:stream:${session}`)).split('\n')[1]);
    await streamState('open');
    assert.equal(await subscribers(a), 1);
    // One message on A, so the switch can be seen to drop it.
    await stack.redis('publish', `ai:stream:${a}`, '{"type":"token","data":{"token":"from-a","index":0}}');
    await page.waitForFunction(() => document.querySelector('#answer').textContent === 'from-a');

    await page.evaluate((s) => window.setSession(s), b);
    await waitUntil(async () => (await subscribers(b)) === 1 && (await subscribers(a)) === 0, {
      what: 'the subscription to move from the old session to the new one',
    });
    await streamState('open');
    assert.equal(await page.textContent('#answer'), '', "B's list must not show A's messages");

    await page.evaluate(() => window.setSession(null));
    await streamState('idle');
    await waitUntil(async () => (await subscribers(b)) === 0, { what: 'the last subscription to end' });
  });
});
