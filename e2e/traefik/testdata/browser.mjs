// Run by TestChromiumThroughTraefik: headless Chromium (Debian's, driven by playwright-core from
// clients/js) loads a page on https://app.example.com, opens the WebSocket given in E2E_BROWSER
// through Traefik, streams, idles, streams again, closes, and prints what it saw as JSON.
import { createRequire } from 'node:module';
import { join } from 'node:path';

const cfg = JSON.parse(process.env.E2E_BROWSER);
const require = createRequire(join(process.env.WSGATE_JS_DIR, 'package.json'));
const { chromium } = require('playwright-core');

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // app.example.com is the test's Traefik on loopback; its certificate is self-signed.
    '--host-resolver-rules=MAP app.example.com 127.0.0.1',
    '--ignore-certificate-errors',
    // The page's address space is unknown (playwright serves it): let it reach loopback.
    '--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights',
  ],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  // The page itself never touches the network: its origin is what the socket sends as Origin.
  await page.route('https://app.example.com/', (route) =>
    route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>gateway e2e</title>' }),
  );
  await page.goto('https://app.example.com/');
  const result = await page.evaluate(
    ({ url, idleMs }) =>
      new Promise((resolve, reject) => {
        const messages = [];
        const ws = new WebSocket(url);
        const timer = setTimeout(() => reject(new Error(`timeout; got ${JSON.stringify(messages)}`)), 30000);
        ws.onerror = () => reject(new Error('websocket error'));
        ws.onopen = () => ws.send('hello');
        ws.onmessage = (ev) => {
          messages.push(ev.data);
          if (messages.length === 3) setTimeout(() => ws.send('after idle'), idleMs);
          if (messages.length === 6) ws.close(1000, 'done');
        };
        ws.onclose = (ev) => {
          clearTimeout(timer);
          resolve({ origin: location.origin, messages, close: ev.code });
        };
      }),
    { url: cfg.url, idleMs: cfg.idleMs },
  );
  process.stdout.write(JSON.stringify(result));
} finally {
  await browser.close();
}
