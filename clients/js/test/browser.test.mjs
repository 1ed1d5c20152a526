// End to end in headless Chromium: the demo page served by a real `wsgate
// demo`, streamed tokens in the DOM for chat and the AI stream, a wsgate
// restart the page survives, and the screenshot in docs/demo.png.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

import { needsWsgate, startWsgate } from './helpers.mjs';

const chromiumPath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const skip = needsWsgate || (existsSync(chromiumPath) ? false : `${chromiumPath} is missing (scripts/test-js.sh installs it)`);
const screenshot = fileURLToPath(new URL('../../../docs/demo.png', import.meta.url));

// Flags from the project's browser notes: no network side traffic, no GPU,
// no sandbox (we run as root in CI). playwright gives each launch a fresh
// temporary user-data-dir.
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

describe('demo page in Chromium', { skip, timeout: 120_000 }, () => {
  let browser;
  let gates = [];
  before(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  });
  after(async () => {
    await browser?.close();
    for (const g of gates) await g.stop('SIGKILL');
  });

  test('streams chat and AI tokens, survives a wsgate restart, and screenshots', async () => {
    const first = await startWsgate();
    gates.push(first);
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const pageErrors = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));

    const res = await page.goto(`${first.http}/`);
    assert.equal(res.status(), 200);
    await waitState(page, 'chat', 'open');
    await waitState(page, 'ai', 'open');
    await page.waitForFunction(() => document.querySelector('#chat-identity').textContent !== '');
    assert.equal(await text(page, '#chat-identity'), 'the upstream sees user alice, tenant demo');

    await ask(page, 'Summarise revenue for Q3');
    assert.deepEqual(await answers(page, 'chat', 1), ['echo: Summarise revenue for Q3']);
    assert.deepEqual(await answers(page, 'ai', 1), ['answer: Summarise revenue for Q3']);

    // Restart wsgate on the same port: the page must notice (1001 from the
    // drain), retry while nothing listens, and come back by itself.
    const stopped = await first.stop('SIGTERM', 5_000); // shutdown_grace is 1s
    assert.deepEqual(stopped, { code: 0, signal: null, killed: false }, `SIGTERM exit; logs:\n${first.logs.join('')}`);
    await page.waitForSelector('#chat-log li[data-code="1001"]', { state: 'attached' });
    await page.waitForSelector('#ai-log li[data-code="1001"]', { state: 'attached' });
    const second = await startWsgate({ port: first.port });
    gates.push(second);
    await waitState(page, 'chat', 'open');
    await waitState(page, 'ai', 'open');
    assert.ok(Number(await text(page, '#chat-reconnects')) >= 1);
    assert.ok(Number(await text(page, '#ai-reconnects')) >= 1);

    await ask(page, 'Forecast Q4 after the restart');
    assert.deepEqual(await answers(page, 'chat', 2), ['echo: Summarise revenue for Q3', 'echo: Forecast Q4 after the restart']);
    assert.deepEqual(await answers(page, 'ai', 2), ['answer: Summarise revenue for Q3', 'answer: Forecast Q4 after the restart']);
    const log = await page.locator('#chat-log li').allTextContents();
    assert.ok(
      log.some((l) => / 1001 server shutting down · reconnecting in \d+ ms$/.test(l)),
      `chat log shows the drain close:\n${log.join('\n')}`,
    );
    assert.deepEqual(pageErrors, []);

    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true, animations: 'disabled' });
  });
});

async function waitState(page, name, state) {
  await page.waitForSelector(`#${name}-state[data-state="${state}"]`, { timeout: 20_000 });
}

async function text(page, selector) {
  return page.evaluate((s) => document.querySelector(s)?.textContent ?? null, selector);
}

async function ask(page, prompt) {
  await page.fill('#prompt', prompt);
  await page.click('#send');
}

/** answers waits for n finished answers in a panel and returns their text. */
async function answers(page, name, n) {
  const sel = `[data-testid="${name}-answer"][data-done="true"]`;
  await page.waitForFunction(([s, want]) => document.querySelectorAll(s).length >= want, [sel, n], { timeout: 20_000 });
  return page.locator(`${sel} [data-testid="${name}-answer-text"]`).allTextContents();
}
